"""`orrery models list` and `orrery models bench` with the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from tests.agents.models.embedded import default_model_entry


@pytest.fixture(autouse=True)
def _embedded_model() -> None:
    default_model_entry()


def test_models_list_shows_the_embedded_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(tmp_path), "models", "list", "--json", "--verify"]) == 0
    rows = {row["name"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    gemma, smollm2 = rows["gemma-3-270m"], rows["smollm2-135m-instruct"]
    assert gemma["roles"] == ["planner", "device"]
    assert smollm2["roles"] == []
    assert (gemma["source"], gemma["quantisation"], gemma["checksum"]) == (
        "embedded",
        "Q4_K_M",
        "ok",
    )
    assert (gemma["chat_format"], smollm2["chat_format"]) == ("gemma", "embedded")
    assert (smollm2["quantisation"], smollm2["context_length"]) == ("Q4_1", 8192)
    assert "CPU" in gemma["runs_on"]


def test_a_broken_file_in_the_models_dir_is_reported_not_fatal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 20)
    assert main(["--data-dir", str(tmp_path), "models", "list"]) == 0
    captured = capsys.readouterr()
    assert "broken.gguf" in captured.err
    assert "gemma" in captured.out


@pytest.mark.slow
def test_models_bench_loads_and_times_a_generation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(tmp_path), "models", "bench", "--tokens", "8"]) == 0
    line = capsys.readouterr().out.strip()
    fields = dict(item.split("=") for item in line.split())
    assert fields["model"] == "gemma-3-270m"
    assert int(fields["generated"]) > 0
    assert float(fields["gen_tok_s"]) > 0


@pytest.mark.parametrize(
    ("model", "needle"),
    [("no-such-model", "no model called 'no-such-model'"), ("/nowhere/x.gguf", "does not exist")],
)
def test_models_bench_names_a_bad_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, needle: str
) -> None:
    assert main(["--data-dir", str(tmp_path), "models", "bench", model]) == 2
    assert needle in capsys.readouterr().err
