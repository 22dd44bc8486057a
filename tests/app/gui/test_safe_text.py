"""Text from devices shows as written in the app: never as markup, never as control codes.

A star's error, output, streamed lines and title come from another machine (or from what
it fetched). Qt reads a label or tooltip as rich text when it looks like HTML, so these
would become links or images, and escape sequences would reach the clipboard or screen.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from agents.events import StarProgress
from app.gui.constellation.view import ConstellationView
from app.gui.inspector import StarInspector
from app.gui.safe_text import markup, plain, tooltip
from tests.app.gui.samples import CID, attempt, constellation, shown

HOSTILE = (
    '<a href="http://evil.example">click</a><img src="x"> \x1b[2J\x1b]52;c;aGk=\x07 \u202eevil'
)


def hostile_snapshot() -> dict[str, object]:
    return constellation(
        {
            "fetch": {
                "title": HOSTILE,
                "status": "failed",
                "error": HOSTILE,
                "output": {"body": HOSTILE},
                "attempts": [attempt(1, "box", "failed", error=HOSTILE)],
            }
        },
        status="failed",
    )


def test_the_helpers_escape_markup_and_control_characters(qapp: QApplication) -> None:
    assert plain("a\x1b[2Jb\tc\n") == "a\\x1b[2Jb\tc\n"
    assert markup("<b>x</b>\x9b") == "&lt;b&gt;x&lt;/b&gt;\\x9b"
    tip = tooltip("<img src=x>\nnext")
    assert "<img" not in tip
    assert "&lt;img" in tip
    assert "\u202e" not in plain("\u202eevil")


def test_the_inspector_shows_device_text_as_written(qtbot: QtBot) -> None:
    inspector = StarInspector()
    qtbot.addWidget(inspector)
    inspector.set_snapshot(hostile_snapshot())
    inspector.show_star("fetch")
    inspector.on_event(
        StarProgress(constellation_id=CID, star_id="fetch", attempt=1, message=HOSTILE)
    )
    assert inspector.status.textFormat() is Qt.TextFormat.PlainText
    assert '<a href="http://evil.example">' in inspector.status.text()
    assert "\\x1b[2J" in inspector.status.text()
    assert "\x1b" not in inspector.status.text()
    # the title label uses markup of its own: the star's title inside it is escaped
    assert "&lt;a href" in inspector.title.text()
    assert "<img" not in inspector.title.text()
    for box in (inspector.result, inspector.stream):
        assert "\x1b" not in box.toPlainText()
        assert "\u202e" not in box.toPlainText()
    assert "\\x1b]52;" in inspector.stream.toPlainText()
    assert "\\u001b]52;" in inspector.result.toPlainText()  # JSON's escape
    error_cell = inspector.attempts.item(0, 4)
    assert error_cell is not None
    assert "\\u202e" in error_cell.text()


def test_the_constellation_view_escapes_titles_and_tooltips(qtbot: QtBot) -> None:
    view = ConstellationView()
    qtbot.addWidget(view)
    view.set_snapshot(hostile_snapshot())
    item = view.constellation_scene.star_item("fetch")
    assert item is not None
    assert "<a href" not in item.toolTip()
    assert "click&lt;/a&gt;" in item.toolTip()
    assert "\x1b" not in item.toolTip()
    assert '<a href="http://evil.example">click</a>' in shown(item.toolTip())  # as written
    assert "\x1b" not in item._title
