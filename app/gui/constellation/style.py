"""How the constellation view looks: colours per state and device, an icon per state.

Colours come from the Okabe-Ito set (told apart by most colour-blind people), and each
state also has its own icon shape, so colour is never the only cue. `theme_for(palette)`
picks the light or dark variant from the application palette.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPainterPath, QPalette, QPen, QPolygonF

from app.gui.constellation.view_model import StarState

# An accent per state (Okabe-Ito, plus greys).
_ACCENT = {
    StarState.WAITING: "#8a8a8a",
    StarState.READY: "#56b4e9",
    StarState.RUNNING: "#0072b2",
    StarState.APPROVAL: "#e69f00",
    StarState.RETRYING: "#cc79a7",
    StarState.SUCCEEDED: "#009e73",
    StarState.FAILED: "#d55e00",
    StarState.SKIPPED: "#b0b0b0",
    StarState.CANCELLED: "#8c7a00",
}

# Device tints: a different set from the state accents, so a stripe never reads as a state.
_DEVICE_COLOURS = (
    "#4e79a7",
    "#f28e2b",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#e15759",
    "#bab0ac",
)

LINE_KINDS = ("success", "completion", "condition")


@dataclass(frozen=True, slots=True)
class Theme:
    """The colours of one drawing."""

    dark: bool
    background: QColor
    text: QColor
    muted: QColor
    line: QColor
    condition: QColor
    highlight: QColor
    panel: QColor

    def accent(self, state: StarState) -> QColor:
        colour = QColor(_ACCENT[state])
        return colour.lighter(125) if self.dark else colour

    def fill(self, state: StarState) -> QColor:
        """The body of a star: the accent mixed into the background."""
        return _mix(self.accent(state), self.background, 0.32 if self.dark else 0.22)

    def line_pen(self, kind: str, width: float = 1.6) -> QPen:
        colour = self.condition if kind == "condition" else self.line
        pen = QPen(colour, width)
        pen.setStyle(_LINE_STYLE.get(kind, Qt.PenStyle.SolidLine))
        pen.setCapStyle(Qt.PenCapStyle.FlatCap)
        return pen


_LINE_STYLE = {
    "success": Qt.PenStyle.SolidLine,
    "completion": Qt.PenStyle.DashLine,
    "condition": Qt.PenStyle.DotLine,
}


def _mix(a: QColor, b: QColor, share: float) -> QColor:
    """`share` of a, the rest b."""
    return QColor.fromRgbF(
        a.redF() * share + b.redF() * (1 - share),
        a.greenF() * share + b.greenF() * (1 - share),
        a.blueF() * share + b.blueF() * (1 - share),
    )


LIGHT = Theme(
    dark=False,
    background=QColor("#ffffff"),
    text=QColor("#1f1f1f"),
    muted=QColor("#5c5c5c"),
    line=QColor("#6b6b6b"),
    condition=QColor("#a35f00"),
    highlight=QColor("#1a73e8"),
    panel=QColor(250, 250, 250, 235),
)
DARK = Theme(
    dark=True,
    background=QColor("#1e1f22"),
    text=QColor("#e8e8e8"),
    muted=QColor("#a8a8a8"),
    line=QColor("#9a9a9a"),
    condition=QColor("#f0b050"),
    highlight=QColor("#8ab4f8"),
    panel=QColor(40, 41, 45, 235),
)


def theme_for(palette: QPalette) -> Theme:
    """The light or dark theme, whichever the palette's window colour is closer to, on
    the palette's own background and text colours."""
    window = palette.color(QPalette.ColorRole.Base)
    base = DARK if palette.color(QPalette.ColorRole.Window).lightness() < 128 else LIGHT
    return Theme(
        dark=base.dark,
        background=window,
        text=palette.color(QPalette.ColorRole.Text),
        muted=base.muted,
        line=base.line,
        condition=base.condition,
        highlight=palette.color(QPalette.ColorRole.Highlight),
        panel=base.panel,
    )


def device_colour(index: int, name: str) -> QColor:
    """The tint of the `index`-th device of the legend (`name` picks one past the set)."""
    if index < len(_DEVICE_COLOURS):
        return QColor(_DEVICE_COLOURS[index])
    return QColor(_DEVICE_COLOURS[zlib.crc32(name.encode()) % len(_DEVICE_COLOURS)])


# ------------------------------------------------------------------ icons


@cache
def icon_path(state: StarState) -> tuple[QPainterPath, bool]:
    """The icon of a state in a 16x16 box: the path and whether it is filled (else
    stroked). Each state has its own shape."""
    path = QPainterPath()
    filled = False
    if state is StarState.WAITING:  # a clock
        path.addEllipse(QRectF(1.5, 1.5, 13, 13))
        path.moveTo(8, 8)
        path.lineTo(8, 4)
        path.moveTo(8, 8)
        path.lineTo(11, 9.5)
    elif state is StarState.READY:  # an open play triangle
        path.addPolygon(QPolygonF([QPointF(4, 2.5), QPointF(13, 8), QPointF(4, 13.5)]))
        path.closeSubpath()
    elif state is StarState.RUNNING:  # a filled play triangle in a ring
        path.addEllipse(QRectF(0.5, 0.5, 15, 15))
        path.addPolygon(QPolygonF([QPointF(6, 4), QPointF(12, 8), QPointF(6, 12)]))
        path.closeSubpath()
        filled = True
    elif state is StarState.APPROVAL:  # a raised hand: a palm with four fingers
        path.addRoundedRect(QRectF(3.5, 7, 9, 7.5), 2.5, 2.5)
        for x in (3.5, 6, 8.5, 11):
            path.addRoundedRect(QRectF(x, 2 + abs(x - 7.25) * 0.3, 1.6, 6), 0.8, 0.8)
        path.setFillRule(Qt.FillRule.WindingFill)
        filled = True
    elif state is StarState.RETRYING:  # a circular arrow
        path.arcMoveTo(QRectF(2, 2, 12, 12), 60)
        path.arcTo(QRectF(2, 2, 12, 12), 60, 280)
        path.moveTo(13.8, 1.5)
        path.lineTo(11.6, 5.6)
        path.lineTo(7.5, 3.8)
    elif state is StarState.SUCCEEDED:  # a check mark
        path.moveTo(2.5, 8.5)
        path.lineTo(6.5, 12.5)
        path.lineTo(13.5, 3.5)
    elif state is StarState.FAILED:  # a cross
        path.moveTo(3, 3)
        path.lineTo(13, 13)
        path.moveTo(13, 3)
        path.lineTo(3, 13)
    elif state is StarState.SKIPPED:  # skip forward: a triangle and a bar
        path.addPolygon(QPolygonF([QPointF(2.5, 3), QPointF(10, 8), QPointF(2.5, 13)]))
        path.closeSubpath()
        path.addRect(QRectF(11, 3, 2.5, 10))
        path.setFillRule(Qt.FillRule.WindingFill)
        filled = True
    elif state is StarState.CANCELLED:  # no entry: a ring with a slash
        path.addEllipse(QRectF(2, 2, 12, 12))
        path.moveTo(4, 12)
        path.lineTo(12, 4)
    return path, filled


def paint_icon(painter: QPainter, box: QRectF, state: StarState, colour: QColor) -> None:
    """Draw the icon of `state` scaled into `box`."""
    path, filled = icon_path(state)
    painter.save()
    painter.translate(box.topLeft())
    painter.scale(box.width() / 16, box.height() / 16)
    if filled:
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QBrush(colour))
        painter.drawPath(path)
    else:
        pen = QPen(colour, 2.0)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(path)
    painter.restore()
