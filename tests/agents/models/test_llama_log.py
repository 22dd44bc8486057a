"""llama.cpp's log goes through `logging` ("orrery.llama"), never raw to stderr."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from agents.models.llama_log import (
    GGML_LOG_LEVEL_CONT,
    GGML_LOG_LEVEL_DEBUG,
    GGML_LOG_LEVEL_ERROR,
    GGML_LOG_LEVEL_INFO,
    GGML_LOG_LEVEL_WARN,
    LOGGER_NAME,
    LineAssembler,
)
from tests.agents.models.embedded import default_model_settings

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def assembler(caplog: pytest.LogCaptureFixture) -> LineAssembler:
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    return LineAssembler(logging.getLogger(LOGGER_NAME))


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER_NAME]


def test_levels_map_warn_to_info_and_chatter_to_debug(
    assembler: LineAssembler, caplog: pytest.LogCaptureFixture
) -> None:
    assembler.take(GGML_LOG_LEVEL_DEBUG, "layer 0: filtered\n")
    assembler.take(GGML_LOG_LEVEL_INFO, "n_ctx = 2048\n")
    assembler.take(GGML_LOG_LEVEL_WARN, "using full-size SWA cache\n")
    assembler.take(GGML_LOG_LEVEL_ERROR, "failed to load\n")
    assert records(caplog) == [
        (logging.DEBUG, "layer 0: filtered"),
        (logging.DEBUG, "n_ctx = 2048"),
        (logging.INFO, "using full-size SWA cache"),
        (logging.WARNING, "failed to load"),
    ]


def test_pieces_and_continuations_make_one_record_per_line(
    assembler: LineAssembler, caplog: pytest.LogCaptureFixture
) -> None:
    assembler.take(GGML_LOG_LEVEL_WARN, "loading")
    assembler.take(GGML_LOG_LEVEL_CONT, ".")
    assembler.take(GGML_LOG_LEVEL_CONT, ".\ndone\n\n")
    assembler.take(GGML_LOG_LEVEL_INFO, "unfinished")
    assembler.take(GGML_LOG_LEVEL_INFO, "next\n")  # a new message ends the unfinished one
    assert records(caplog) == [
        (logging.INFO, "loading.."),
        (logging.INFO, "done"),
        (logging.DEBUG, "unfinished"),
        (logging.DEBUG, "next"),
    ]


LOAD_AND_CHAT = """
import asyncio, logging, sys
from pathlib import Path
from agents.models.backend import LlamaBackend, LoadSettings

if sys.argv[3] == "debug":
    logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")

async def main():
    settings = LoadSettings(path=Path(sys.argv[1]), n_ctx=1024, chat_format=sys.argv[2])
    async with LlamaBackend(settings) as backend:
        await backend.chat([{"role": "user", "content": "Hi"}], max_tokens=2)
    print("ok")

asyncio.run(main())
"""


def load_and_chat(logging_level: str) -> subprocess.CompletedProcess[str]:
    settings = default_model_settings()
    return subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_AND_CHAT,
            str(settings.path),
            settings.chat_format or "",
            logging_level,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


@pytest.mark.slow
def test_loading_the_real_model_prints_nothing_on_stderr_by_default() -> None:
    result = load_and_chat("default")
    assert result.stdout.strip() == "ok"
    assert result.stderr == ""  # before: "llama_kv_cache_iswa: using full-size SWA cache ..."


@pytest.mark.slow
def test_at_debug_the_lines_come_through_logging_including_those_of_the_load() -> None:
    lines = load_and_chat("debug").stderr.splitlines()
    assert any(
        line.startswith(f"INFO {LOGGER_NAME}: llama_kv_cache_iswa: using full-size SWA cache")
        for line in lines
    )
    # Written while the model file loads, when llama-cpp-python used to point stderr at
    # /dev/null for the whole process.
    assert any(line.startswith(f"DEBUG {LOGGER_NAME}: llama_model_loader: ") for line in lines)
    assert all(line.startswith(("DEBUG ", "INFO ", "WARNING ")) for line in lines), (
        "a line that did not come through logging"
    )
