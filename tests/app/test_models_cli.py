"""`orrery models list` and `orrery models bench` with the embedded model."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from agents.models.progress import StepReporter
from agents.models.registry import ModelRegistry
from app.cli import main
from app.models_cli import preparation_progress
from tests.agents.models.embedded import default_model_entry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _embedded_model() -> None:
    default_model_entry()


@pytest.fixture(scope="module")
def prepared_data_dir() -> Path:
    """A data dir whose models are joined and whose metadata is cached: nothing to prepare."""
    data = default_model_entry().path.parents[2]  # DATA_DIR/cache/embedded/<file>
    ModelRegistry.discover(data_dir=data)
    return data


@pytest.fixture
def data_dir(tmp_path: Path, prepared_data_dir: Path) -> Path:
    """A data dir of this test's own that shares the prepared one's cache (joined model,
    parsed metadata), so a command in it does not spend seconds preparing models."""
    (tmp_path / "cache").symlink_to(prepared_data_dir / "cache", target_is_directory=True)
    return tmp_path


def test_models_list_shows_the_embedded_default(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(data_dir), "models", "list", "--json", "--verify"]) == 0
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
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (data_dir / "models").mkdir()
    (data_dir / "models" / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 20)
    assert main(["--data-dir", str(data_dir), "models", "list"]) == 0
    captured = capsys.readouterr()
    assert "broken.gguf" in captured.err
    assert "gemma" in captured.out


@pytest.mark.slow
def test_models_bench_loads_and_times_a_generation(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(data_dir), "models", "bench", "--tokens", "8"]) == 0
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
    data_dir: Path, capsys: pytest.CaptureFixture[str], model: str, needle: str
) -> None:
    assert main(["--data-dir", str(data_dir), "models", "bench", model]) == 2
    assert needle in capsys.readouterr().err


def test_models_list_is_readable_at_80_columns(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["--data-dir", str(data_dir), "models", "list", "--verify"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    header = next(line.split() for line in lines if line.startswith("name"))
    assert header == ["name", "roles", "params", "quant", "MiB", "context", "chat"]
    gemma = next(line for line in lines if line.startswith("gemma-3-270m "))
    assert gemma.split() == [
        *["gemma-3-270m", "planner,", "device", "270M", "Q4_K_M", "241.4", "32768", "gemma"]
    ]
    smollm2 = next(line for line in lines if line.startswith("smollm2-135m-instruct "))
    assert smollm2.split() == ["smollm2-135m-instruct", "135M", "Q4_1", "93.8", "8192", "embedded"]
    # Each model's longer facts follow the table, on lines of their own, the reason whole.
    details = "\n".join(lines[lines.index("gemma-3-270m; checksum ok") :])
    assert "  runs on: no GPU with free memory found: running on the CPU" in details
    assert "smollm2-135m-instruct; checksum ok" in details


def test_sizes_are_labelled_in_mib_in_json_too(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(data_dir), "models", "list", "--json"]) == 0
    rows = {row["name"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    gemma = rows["gemma-3-270m"]
    assert gemma["size_mib"] == round(Path(gemma["path"]).stat().st_size / 2**20, 1) == 241.4
    assert "size_mb" not in gemma


@pytest.mark.slow
def test_the_first_use_preparation_is_shown_and_the_second_run_is_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(tmp_path), "models", "list", "--json"]) == 0
    captured = capsys.readouterr()
    joining = "orrery: preparing models: joining gemma-3-270m-q4_k_m.gguf from 4 pieces"
    reading = "orrery: preparing models: reading the metadata of gemma-3-270m-q4_k_m.gguf"
    lines = captured.err.splitlines()
    assert f"{joining} (241.4 MiB) ..." in lines
    assert any(re.fullmatch(f"{re.escape(joining)}: done in [0-9.]+s", line) for line in lines)
    assert f"{reading} ..." in lines
    assert any(re.fullmatch(f"{re.escape(reading)}: done in [0-9.]+s", line) for line in lines)
    assert len(captured.out.splitlines()) == 2  # stdout stays JSON, one model a line
    assert main(["--data-dir", str(tmp_path), "models", "list", "--json"]) == 0
    assert capsys.readouterr().err == ""


def test_on_a_terminal_the_preparation_shows_as_bars() -> None:
    screen = io.StringIO()
    with preparation_progress(Console(file=screen, force_terminal=True, width=120)) as progress:
        joining = StepReporter(progress, "joining x.gguf from 2 pieces", 4 * 2**20)
        joining.advance(4 * 2**20)
        joining.finish()
        StepReporter(progress, "reading the metadata of y.gguf", None).fail("truncated")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    assert "preparing models: joining x.gguf from 2 pieces: done" in text
    assert "4.0 MiB of 4.0 MiB" in text
    assert "preparing models: reading the metadata of y.gguf: failed (truncated)" in text
    assert "━" in text  # a bar


def test_nothing_is_shown_when_nothing_is_prepared() -> None:
    for terminal in (True, False):
        screen = io.StringIO()
        with preparation_progress(Console(file=screen, force_terminal=terminal)):
            pass
        assert screen.getvalue() == ""


BENCH = ("models", "bench", "--tokens", "2")


def models_bench(data: Path, *verbosity: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *verbosity, "--data-dir", str(data), *BENCH],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


@pytest.mark.slow
def test_models_bench_prints_no_llama_cpp_lines_by_default(data_dir: Path) -> None:
    result = models_bench(data_dir)
    assert result.stdout.startswith("model=gemma-3-270m ")
    assert result.stderr == ""  # before: "llama_kv_cache_iswa: using full-size SWA cache ..."


@pytest.mark.slow
def test_with_v_llama_cpp_warnings_come_through_logging(data_dir: Path) -> None:
    lines = models_bench(data_dir, "-v").stderr.splitlines()
    swa = [line for line in lines if "using full-size SWA cache" in line]
    assert len(swa) == 1
    assert " INFO orrery.llama: llama_kv_cache_iswa: using full-size SWA cache" in swa[0]
    assert not any(" DEBUG " in line for line in lines)  # llama.cpp's chatter needs -vv
