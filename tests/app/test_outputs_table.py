"""What `orrery run` and `orrery show` print of the stars' outputs (issue 21, point 3):
every value a succeeded star produced, bounded in lines and characters with what was left
out said, control characters and rich markup shown as text, not obeyed."""

from __future__ import annotations

import io

from rich.console import Console

from agents.constellation import Constellation, Star, StarStatus
from app.progress import OUTPUT_CHARS, OUTPUT_LINES, outputs_table, render_output


def rendered(table: object) -> str:
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=200, color_system=None).print(table)
    return out.getvalue()


def star(star_id: str, output: object, status: StarStatus = StarStatus.SUCCEEDED) -> Star:
    return Star(id=star_id, tool="shell.run", status=status, output=output)


def constellation(*stars: Star) -> Constellation:
    return Constellation(id="c1", name="n", stars={s.id: s for s in stars})


def test_a_commands_stdout_is_shown_as_text_and_other_outputs_as_json() -> None:
    assert render_output({"returncode": 0, "stdout": "4\n", "stderr": ""}) == "4"
    assert render_output({"content": "hello"}) == "hello"
    assert render_output({"disk_free_mb": 1234, "cpus": 8}) == '{"disk_free_mb": 1234, "cpus": 8}'
    assert render_output({"returncode": 0, "stdout": "", "stderr": ""}).startswith("{")


def test_long_outputs_are_bounded_and_say_what_was_left_out() -> None:
    many = "\n".join(f"line {i}" for i in range(100))
    shown = render_output({"stdout": many})
    assert shown.splitlines()[:OUTPUT_LINES] == [f"line {i}" for i in range(OUTPUT_LINES)]
    assert shown.splitlines()[-1] == f"… ({100 - OUTPUT_LINES} more lines)"
    wide = render_output({"stdout": "x" * 5000})
    assert wide == "x" * OUTPUT_CHARS + f"\n… ({5000 - OUTPUT_CHARS} more characters)"


def test_device_text_is_escaped_not_obeyed() -> None:
    table = outputs_table(constellation(star("a", {"stdout": "[bold]hi[/] \x1b[2J\u202edone\n"})))
    text = rendered(table)
    assert "[bold]hi[/]" in text  # markup shown as written
    assert "\x1b[2J" not in text
    assert "\\x1b[2J" in text
    assert "\u202e" not in text


def test_emoji_codes_in_device_text_stay_text() -> None:
    table = outputs_table(constellation(star("a", {"stdout": "root:x:0:0:root\n:smile:"})))
    text = rendered(table)
    assert "root:x:0:0:root" in text
    assert ":smile:" in text


def test_only_succeeded_stars_with_a_value_are_listed() -> None:
    table = outputs_table(
        constellation(
            star("kept", {"stdout": "42\n"}),
            star("failed", {"stdout": "half\n"}, StarStatus.FAILED),
            star("empty", {}),
            star("nothing", None),
        )
    )
    assert table is not None
    text = rendered(table)
    assert "kept" in text
    assert "42" in text
    for left_out in ("failed", "half", "empty", "nothing"):
        assert left_out not in text
    assert outputs_table(constellation(star("empty", {}), star("none", None))) is None
