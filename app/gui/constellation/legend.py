"""The key to the drawing: device tints, state icons (with counts), line kinds, and notes
on what the drawing cannot show (fan-outs that take joining devices).

`Legend` lays the entries out in rows no wider than asked and paints them; the view
shows it in a corner (`LegendOverlay`) and the offscreen renderer under the drawing.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QWidget

from app.gui.constellation.items import Look
from app.gui.constellation.style import LINE_KINDS, paint_icon
from app.gui.constellation.view_model import ConstellationModel, StarState

_GLYPH = 16.0
_SPACE = 6.0
_ENTRY_GAP = 16.0
_ROW_GAP = 6.0
_PAD = 10.0


@dataclass(frozen=True, slots=True)
class _Entry:
    kind: str  # "heading", "device", "state", "line", "note"
    text: str
    key: str = ""


class Legend:
    """The legend of one model, laid out for a width."""

    def __init__(self, model: ConstellationModel, look: Look, *, all_states: bool = False):
        self.look = look
        counts = model.counts()
        rows: list[list[_Entry]] = []
        devices = model.devices
        if devices:
            rows.append([_Entry("heading", "Devices")] + [_Entry("device", d, d) for d in devices])
        states = [s for s in StarState if all_states or counts[s]]
        if states:
            rows.append(
                [_Entry("heading", "Stars")]
                + [_Entry("state", f"{s.label} {counts[s]}", s.value) for s in states]
            )
        kinds = [k for k in LINE_KINDS if k in model.line_kinds]
        if kinds:
            rows.append([_Entry("heading", "Lines")] + [_Entry("line", k, k) for k in kinds])
        if model.notes:
            rows.append([_Entry("heading", "Fan-out")] + [_Entry("note", n) for n in model.notes])
        self.rows = rows

    def _width(self, entry: _Entry) -> float:
        look = self.look
        if entry.kind == "heading":
            return look.badge_metrics.horizontalAdvance(entry.text) + _SPACE
        if entry.kind == "note":
            return look.small_metrics.horizontalAdvance(entry.text)
        glyph = 28.0 if entry.kind == "line" else _GLYPH
        return glyph + _SPACE + look.small_metrics.horizontalAdvance(entry.text)

    def _placed(self, width: float) -> list[tuple[_Entry, QPointF]]:
        """Each entry and its top-left corner, rows wrapped at `width`."""
        height = max(_GLYPH, self.look.small_metrics.height())
        placed: list[tuple[_Entry, QPointF]] = []
        y = _PAD
        for row in self.rows:
            x = _PAD
            indent = _PAD + self._width(row[0]) + _SPACE
            for i, entry in enumerate(row):
                w = self._width(entry)
                if i > 1 and x + w > width - _PAD:
                    x, y = indent, y + height + _ROW_GAP
                placed.append((entry, QPointF(x, y)))
                x += w + (_SPACE if i == 0 else _ENTRY_GAP)
            y += height + _ROW_GAP
        return placed

    def size(self, width: float) -> QSize:
        if not self.rows:
            return QSize(0, 0)
        placed = self._placed(width)
        height = max(_GLYPH, self.look.small_metrics.height())
        right = max(p.x() + self._width(e) for e, p in placed)
        bottom = max(p.y() for _, p in placed) + height
        return QSize(int(right + _PAD + 1), int(bottom + _PAD + 1))

    def paint(self, painter: QPainter, origin: QPointF, width: float) -> None:
        look, theme = self.look, self.look.theme
        height = max(_GLYPH, look.small_metrics.height())
        painter.save()
        painter.translate(origin)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        for entry, at in self._placed(width):
            text_at = QPointF(at.x(), at.y() + (height + look.small_metrics.ascent()) / 2 - 2)
            if entry.kind == "heading":
                painter.setFont(look.badge_font)
                painter.setPen(theme.text)
                painter.drawText(text_at, entry.text)
                continue
            if entry.kind == "note":
                painter.setFont(look.small_font)
                painter.setPen(theme.text)
                painter.drawText(text_at, entry.text)
                continue
            glyph = QRectF(at.x(), at.y() + (height - _GLYPH) / 2, _GLYPH, _GLYPH)
            if entry.kind == "device":
                colour = look.device(entry.key)
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(colour if colour is not None else theme.muted)
                painter.drawRoundedRect(glyph.adjusted(2, 2, -2, -2), 3, 3)
            elif entry.kind == "state":
                paint_icon(painter, glyph, StarState(entry.key), theme.accent(StarState(entry.key)))
            else:
                glyph.setWidth(28.0)
                painter.setPen(theme.line_pen(entry.key, 2.0))
                middle = glyph.center().y()
                painter.drawLine(QPointF(glyph.left(), middle), QPointF(glyph.right(), middle))
            painter.setFont(look.small_font)
            painter.setPen(theme.text)
            painter.drawText(QPointF(glyph.right() + _SPACE, text_at.y()), entry.text)
        painter.restore()


class LegendOverlay(QWidget):
    """The legend on a panel in a corner of the view, in rows up to `set_width` wide;
    hidden when there is nothing to key."""

    def __init__(self, parent: QWidget, model: ConstellationModel, look: Look) -> None:
        super().__init__(parent)
        self.model = model
        self.look = look
        self._width = 600.0
        self._legend: Legend | None = None
        self.setAccessibleName("Legend")
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)

    def set_width(self, width: float) -> None:
        if width != self._width:
            self._width = max(200.0, width)
            self.refresh()

    def refresh(self) -> None:
        self._legend = Legend(self.model, self.look)
        self.resize(self._legend.size(self._width))
        parts = [" ".join(e.text for e in row) for row in self._legend.rows]
        self.setAccessibleDescription("; ".join(parts))
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        if self._legend is None or not self._legend.rows:
            return
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(self.look.theme.muted, 1))
        painter.setBrush(self.look.theme.panel)
        painter.drawRoundedRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5), 6, 6)
        self._legend.paint(painter, QPointF(0, 0), self._width)
        painter.end()
