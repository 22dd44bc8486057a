"""Secrets off the command line (issue 16, finding 2): a device token comes from
`--token-file` or $ORRERY_DEVICE_TOKEN, a control token from `--token-file`,
$ORRERY_CONTROL_TOKEN or the data dir; `--token` still works but is warned about, since
every local user can read a command line. Parsed in this process: no token goes on the
command line of any process here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.cli import build_parser
from app.commands.clients import TokenMissing, control_token
from app.commands.device import device_token
from app.control.token import ENV_TOKEN
from app.device_processes import DEVICE_TOKEN_ENV

ROOT = Path(__file__).resolve().parents[2]


def device_options(*args: str) -> object:
    return build_parser().parse_args(["device", "--server", "ws://h:1", "--name", "d", *args])


def test_the_device_token_comes_from_a_file_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "device.token"
    token_file.write_text("orr1_from_file\n")
    monkeypatch.setenv(DEVICE_TOKEN_ENV, "orr1_from_env")
    assert device_token(device_options("--token-file", str(token_file))) == "orr1_from_file"
    assert device_token(device_options()) == "orr1_from_env"
    assert capsys.readouterr().err == ""  # neither is warned about


def test_a_device_token_on_the_command_line_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(DEVICE_TOKEN_ENV, raising=False)
    assert device_token(device_options("--token", "orr1_visible")) == "orr1_visible"
    warning = capsys.readouterr().err
    assert warning.startswith("orrery: warning: --token puts a secret on the command line")
    assert "/proc/PID/cmdline" in warning
    assert "--token-file" in warning
    assert f"${DEVICE_TOKEN_ENV}" in warning
    assert "orr1_visible" not in warning


def test_no_device_token_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEVICE_TOKEN_ENV, raising=False)
    with pytest.raises(TokenMissing, match="--token-file FILE"):
        device_token(device_options())


def test_an_empty_or_missing_token_file_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(TokenMissing, match="is empty"):
        device_token(device_options("--token-file", str(tmp_path / "empty")))
    with pytest.raises(TokenMissing, match="cannot read"):
        device_token(device_options("--token-file", str(tmp_path / "missing")))


def test_the_control_token_comes_from_a_file_and_the_command_line_one_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "control.token"
    token_file.write_text("orc1_from_file\n")
    parser = build_parser()
    server = ["history", "--server", "ws://127.0.0.1:1"]
    from_file = parser.parse_args([*server, "--token-file", str(token_file)])
    assert control_token(from_file) == "orc1_from_file"
    assert control_token(parser.parse_args(server)) is None  # the client looks further
    assert capsys.readouterr().err == ""
    assert control_token(parser.parse_args([*server, "--token", "orc1_visible"])) == "orc1_visible"
    warning = capsys.readouterr().err
    assert "--token puts a secret on the command line" in warning
    assert f"${ENV_TOKEN}" in warning


def test_no_doc_puts_a_token_on_a_command_line() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    offending = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in docs
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"--token(?!-file)[ =][^`|]*\S", line) and "warn" not in line
    ]
    assert offending == []


def test_no_test_starts_a_process_with_a_token_on_its_command_line() -> None:
    offending = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path.name != "test_tokens.py"  # parses `--token` in this process only
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"""["']--token["'],""", line)  # in an argument list
    ]
    assert offending == []
