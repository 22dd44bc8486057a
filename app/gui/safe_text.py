"""Device text in widgets: escaped by `app.text_safety.printable`, never read as markup.

Qt reads a label's or tooltip's text as rich text when it looks like HTML
(`Qt.mightBeRichText`), so a star's error `<a href=...>` or `<img src=...>` from another
machine would become a link or an image. Every widget that shows text a device, a plan
or a model wrote goes through one of these:

- `plain(text)` for item texts, plain-text editors and painter text (they never read
  markup; control characters are escaped all the same);
- `plain_label(label)` once for a `QLabel` that shows such text (plain text format);
- `markup(text)` for such text placed inside a label that uses markup of its own;
- `tooltip(text)` for a tooltip (Qt has no plain-text tooltip: this escapes it).
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtGui import Qt as GuiQt
from PySide6.QtWidgets import QLabel

from app.text_safety import printable


def plain(text: object) -> str:
    """`text` with control and format characters escaped (for widgets that show plain text)."""
    return printable(str(text))


def markup(text: object) -> str:
    """`text` escaped for a place inside Qt rich text: shown as written, never as markup."""
    return html.escape(printable(str(text)), quote=False)


def tooltip(text: object) -> str:
    """`text` as a tooltip that shows it as written (line breaks kept)."""
    return GuiQt.convertFromPlainText(printable(str(text)))


def plain_label(label: QLabel) -> QLabel:
    """`label` set to show its text as plain text, whatever it contains."""
    label.setTextFormat(Qt.TextFormat.PlainText)
    return label
