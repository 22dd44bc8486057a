"""The graphics items of the constellation scene: a box per star, a path per line.

Items draw from a shared `Look` (theme, fonts, device colours) that the scene owns; they
keep the texts they show precomputed, so a repaint only paints.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetricsF,
    QPainter,
    QPainterPath,
    QPainterPathStroker,
    QPen,
    QPolygonF,
)
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsRectItem,
    QStyleOptionGraphicsItem,
    QWidget,
)

from app.gui.constellation.layout import LayoutMetrics
from app.gui.constellation.style import LIGHT, Theme, device_colour, paint_icon
from app.gui.constellation.view_model import LineView, StarState, StarView
from app.gui.safe_text import plain, tooltip

STAR_Z = 10.0
LINE_Z = 0.0

_PAD = 10.0
_STRIPE = 6.0
_ICON = 18.0
_DETAILED = 0.4
"""Below this zoom a star is drawn as a coloured box with its icon, no text."""
_BLOCK = 0.15
"""Below this zoom (a minimap, a huge plan) a star is a plain coloured box."""
_REACH = 10.0
"""The width of a line's shape: where it is hovered, and the room its drawing may take
around its path (the arrow head and the diamond are 9 wide)."""


class Look:
    """What every item of one scene draws with."""

    def __init__(self, metrics: LayoutMetrics, theme: Theme = LIGHT, font: QFont | None = None):
        self.metrics = metrics
        self._pens: dict[tuple[str, float, bool, bool], QPen] = {}
        self.theme = theme
        self.devices: dict[str, QColor] = {}
        self.set_font(font or QFont())

    @property
    def theme(self) -> Theme:
        return self._theme

    @theme.setter
    def theme(self, theme: Theme) -> None:
        self._theme = theme
        self._pens.clear()

    def line_pen(self, kind: str, width: float, *, selected: bool, faint: bool) -> QPen:
        """The pen of a line (made once per look: a repaint of a thousand lines makes
        none). `faint`: the hair line drawn when stars are a few pixels wide."""
        key = (kind, width, selected, faint)
        pen = self._pens.get(key)
        if pen is None:
            pen = self.theme.line_pen(kind, width)
            if selected:
                pen.setColor(self.theme.highlight)
            if faint:  # no antialiasing, no dash pattern to compute
                pen.setStyle(Qt.PenStyle.SolidLine)
                pen.setWidth(0)
                colour = QColor(pen.color())
                colour.setAlpha(90)
                pen.setColor(colour)
            self._pens[key] = pen
        return pen

    def set_font(self, font: QFont) -> None:
        self.title_font = QFont(font)
        self.title_font.setBold(True)
        self.small_font = QFont(font)
        self.small_font.setPointSizeF(max(6.0, font.pointSizeF() * 0.85))
        self.badge_font = QFont(self.small_font)
        self.badge_font.setBold(True)
        self.title_metrics = QFontMetricsF(self.title_font)
        self.small_metrics = QFontMetricsF(self.small_font)
        self.badge_metrics = QFontMetricsF(self.badge_font)

    def set_devices(self, names: list[str]) -> None:
        self.devices = {name: device_colour(i, name) for i, name in enumerate(names)}

    def device(self, name: str) -> QColor | None:
        return self.devices.get(name) if name else None


class StarItem(QGraphicsRectItem):
    """One star: a box coloured by state, with its state icon, title, tool, device, a
    badge with the attempt number after a retry, and progress or error text.

    (A rect item only for its bounds, which Qt then knows without asking Python: a
    repaint of a thousand stars calls nothing but their `paint`.)"""

    def __init__(self, star: StarView, look: Look) -> None:
        m = look.metrics
        self._rect = QRectF(-m.node_width / 2, -m.node_height / 2, m.node_width, m.node_height)
        super().__init__(self._rect.adjusted(-3, -3, 3, 3))
        self.setPen(QPen(Qt.PenStyle.NoPen))
        self.star_id = star.id
        self.look = look
        self.lines: list[LineItem] = []
        self._face: tuple[object, ...] = ()
        self._tip = ""
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)
        self.setZValue(STAR_Z)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.refresh(star)

    def refresh(self, star: StarView, *, texts: bool = False) -> None:
        """Take the star's new state (texts are elided here, once, not at each paint);
        repainted only if what it shows changed. `texts`: lay the texts out again even
        so (the font changed)."""
        self.star = star
        face = (
            star.state, star.device, star.badge, star.title, star.tool, star.detail, star.id
        )  # fmt: skip
        if face != self._face or texts:
            self._face = face
            look = self.look
            room = self._rect.width() - (2 * _PAD + _STRIPE + _ICON + 6)
            badge = star.badge
            title_room = room - (look.badge_metrics.horizontalAdvance(badge) + 12 if badge else 0)
            elide = Qt.TextElideMode.ElideRight
            title = plain(star.title or star.id)
            self._title = look.title_metrics.elidedText(title, elide, title_room)
            where = f"{star.tool} · {star.device}" if star.device else star.tool
            self._where = look.small_metrics.elidedText(plain(where), elide, room)
            self._detail = look.small_metrics.elidedText(plain(star.detail), elide, room)
            self.update()
        tip = star.tooltip()
        if tip != self._tip:
            self._tip = tip
            self.setToolTip(tooltip(tip))

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRoundedRect(self._rect, 6, 6)
        return path

    def anchor_out(self) -> QPointF:
        return self.pos() + QPointF(self._rect.right(), 0)

    def anchor_in(self) -> QPointF:
        return self.pos() + QPointF(self._rect.left(), 0)

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: object) -> object:
        if change is QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged:
            for line in self.lines:
                line.follow()
        return super().itemChange(change, value)

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionGraphicsItem,
        widget: QWidget | None = None,
    ) -> None:
        look, star, rect = self.look, self.star, self._rect
        theme = look.theme
        state = star.state
        accent = theme.accent(state)
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        device = look.device(star.device)
        if lod < _BLOCK:  # a few pixels: a plain box, no antialiasing
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
            painter.fillRect(rect, accent)
            if device is not None:
                painter.fillRect(
                    QRectF(rect.left(), rect.top(), rect.width() / 6, rect.height()), device
                )
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        selected = self.isSelected()
        border = QPen(theme.highlight if selected else accent, 3.0 if selected else 1.5)
        if state is StarState.SKIPPED:
            border.setStyle(Qt.PenStyle.DashLine)
        painter.setPen(border)
        painter.setBrush(QBrush(theme.fill(state)))
        painter.drawRoundedRect(rect, 6, 6)
        if device is not None:
            stripe = QPainterPath()
            stripe.addRoundedRect(
                QRectF(rect.left() + 1.5, rect.top() + 1.5, _STRIPE + 4, rect.height() - 3), 4, 4
            )
            clip = QPainterPath()
            clip.addRect(QRectF(rect.left(), rect.top(), _STRIPE + 1.5, rect.height()))
            painter.fillPath(stripe.intersected(clip), device)
        icon_box = QRectF(rect.left() + _STRIPE + _PAD, rect.top() + _PAD, _ICON, _ICON)
        paint_icon(painter, icon_box, state, accent)
        if lod < _DETAILED:
            return
        left = icon_box.right() + 6
        painter.setPen(theme.text)
        painter.setFont(look.title_font)
        baseline = rect.top() + _PAD + look.title_metrics.ascent()
        painter.drawText(QPointF(left, baseline), self._title)
        painter.setFont(look.small_font)
        painter.setPen(theme.muted)
        step = look.small_metrics.lineSpacing()
        painter.drawText(QPointF(left, baseline + step + 3), self._where)
        if self._detail:
            painter.setPen(accent if state.finished or state is StarState.RETRYING else theme.text)
            painter.drawText(QPointF(left, baseline + 2 * step + 3), self._detail)
        if star.badge:
            self._paint_badge(painter, star.badge, accent)

    def _paint_badge(self, painter: QPainter, text: str, accent: QColor) -> None:
        look, rect = self.look, self._rect
        width = look.badge_metrics.horizontalAdvance(text) + 10
        height = look.badge_metrics.height() + 2
        box = QRectF(rect.right() - width - 6, rect.top() + 6, width, height)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(accent)
        painter.drawRoundedRect(box, height / 2, height / 2)
        painter.setPen(QColor("#ffffff") if not look.theme.dark else QColor("#000000"))
        painter.setFont(look.badge_font)
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)


class LineItem(QGraphicsPathItem):
    """One line, from the right side of its upstream star to the left side of its
    downstream one through its bend points: solid for `success`, dashed for
    `completion`, dotted with a diamond at its start for `condition` (the predicate is
    its tooltip).

    Its bounds are its shape's (a band `_REACH` wide around the path, wide enough for
    the arrow head, the diamond and the widest pen): Qt computes them once per path
    and keeps them, so a repaint calls nothing but `paint`."""

    def __init__(self, line: LineView, source: StarItem, target: StarItem, look: Look) -> None:
        super().__init__()
        self.line = line
        self.source = source
        self.target = target
        self.look = look
        self.bends: tuple[tuple[float, float], ...] | None = None
        """The bend points (None until placed)."""
        self.setZValue(LINE_Z)
        self.setAcceptHoverEvents(True)
        self.setPen(QPen(Qt.GlobalColor.transparent, 1))  # (bounds from `shape`; never drawn)
        self._hover = False
        self._shape: QPainterPath | None = None
        source.lines.append(self)
        target.lines.append(self)
        self.set_line(line)

    def set_line(self, line: LineView) -> None:
        self.line = line
        self.setToolTip(tooltip(line.tooltip()))
        self.update()

    def detach(self) -> None:
        for star in (self.source, self.target):
            if self in star.lines:
                star.lines.remove(self)

    def set_bends(self, bends: tuple[tuple[float, float], ...]) -> None:
        self.bends = bends
        self.follow()

    def follow(self) -> None:
        """Redraw the path between the stars' current places."""
        half = self.look.metrics.node_width / 2
        start, end = self.source.anchor_out(), self.target.anchor_in()
        points = [start]
        for x, y in self.bends or ():  # across a column it crosses, a line runs straight
            points += [QPointF(x - half, y), QPointF(x + half, y)]
        points.append(end)
        path = QPainterPath(start)
        for i in range(0, len(points) - 1, 2):
            a, b = points[i], points[i + 1]
            if i:
                path.lineTo(a)
            bend = (b.x() - a.x()) / 2
            path.cubicTo(QPointF(a.x() + bend, a.y()), QPointF(b.x() - bend, b.y()), b)
        self._shape = None
        self.setPath(path)
        self._shape = None  # (in case Qt asked for it with the old path meanwhile)

    def shape(self) -> QPainterPath:
        if self._shape is None:
            stroker = QPainterPathStroker()
            stroker.setWidth(_REACH)
            self._shape = stroker.createStroke(self.path())
        return self._shape

    def hoverEnterEvent(self, event: object) -> None:
        self._hover = True
        self.update()

    def hoverLeaveEvent(self, event: object) -> None:
        self._hover = False
        self.update()

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionGraphicsItem,
        widget: QWidget | None = None,
    ) -> None:
        look, kind = self.look, self.line.kind
        selected = self.source.isSelected() or self.target.isSelected()
        painter.setBrush(Qt.BrushStyle.NoBrush)
        path = self.path()
        if option.levelOfDetailFromTransform(painter.worldTransform()) < _BLOCK:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
            painter.setPen(look.line_pen(kind, 0.0, selected=selected, faint=True))
            painter.drawPath(path)
            return
        width = 3.0 if self._hover else (2.4 if selected else 1.6)
        pen = look.line_pen(kind, width, selected=selected, faint=False)
        theme = look.theme
        painter.setPen(pen)
        painter.drawPath(path)
        end = path.currentPosition()
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(pen.color())
        painter.drawPolygon(
            QPolygonF([end, end + QPointF(-9, -4.5), end + QPointF(-9, 4.5)]),
        )
        if kind == "condition":
            start = path.pointAtPercent(0)
            diamond = [QPointF(0, 0), QPointF(6, -4.5), QPointF(12, 0), QPointF(6, 4.5)]
            painter.setPen(QPen(pen.color(), 1.2))
            painter.setBrush(theme.background)
            painter.drawPolygon(QPolygonF([start + p for p in diamond]))
