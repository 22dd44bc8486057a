"""Text from devices made safe to show: control characters escaped, never interpreted.

What a device reports -- a command's output, an error, a star's note, a file's content --
is data from another machine (or from what it fetched). Printed raw, an escape sequence
in it (`\\x1b[2J` clears the screen, `\\x1b]52;...` writes the clipboard, `\\r` rewrites a
line) would act on the terminal of whoever runs `orrery run`. Every front end passes such
text through `printable` before it reaches a terminal or a widget:

    console.print(escape(printable(event.error)))     # rich: escape markup as well
    label.setText(printable(star.error))              # Qt: plain text (Qt.PlainText)

`printable` keeps line breaks and tabs (`one_line` folds them too), and writes every other
control character -- C0, DEL, C1 (`\\x9b` is a one-byte CSI), and the Unicode format
characters that reorder or hide text (bidi overrides, zero-width joiners) -- as a visible
`\\xNN` / `\\uNNNN` escape. The desktop app must show device text the same way: through
`printable`, in widgets set to plain text (no rich text, no HTML, no links).
"""

from __future__ import annotations

_KEPT = frozenset("\n\t")


def _escape(character: str) -> str:
    code = ord(character)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _unsafe(character: str) -> bool:
    # `str.isprintable` is False for Unicode's Cc, Cf, Zl, Zp, Zs (but the space), Co, Cn
    return not (character.isprintable() or character in _KEPT)


def printable(text: str) -> str:
    """`text` with every control or format character (except newline and tab) escaped
    as `\\xNN` or `\\uNNNN`; printable text, of any script, stays as it is."""
    if text.isprintable():
        return text
    return "".join(_escape(c) if _unsafe(c) else c for c in text)


def one_line(text: str, limit: int | None = None) -> str:
    """`printable(text)` on one line (runs of whitespace, line breaks included, become one
    space), cut to `limit` characters with an ellipsis when longer."""
    flat = " ".join(printable(text.replace("\r", " ")).split())
    if limit is not None and len(flat) > limit:
        return flat[: limit - 1] + "…"
    return flat


def is_printable(text: str) -> bool:
    """Whether `text` holds nothing `printable` would escape."""
    return not any(_unsafe(c) for c in text)


__all__ = ["is_printable", "one_line", "printable"]
