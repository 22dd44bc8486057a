"""A small overview of the whole constellation with the main view's visible part framed;
click or drag in it to look elsewhere.

It does not paint the scene's items (for 1,000 stars and their lines that takes some
50 ms): it draws the stars as boxes in their state colours, and the lines as hairlines
when there are not too many, straight from the layout's data into a cached picture,
rebuilt at most a few times a second while the constellation changes. Only the frame is
drawn live.
"""

from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import (
    QBrush,
    QColor,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPen,
    QPixmap,
    QResizeEvent,
    QTransform,
)
from PySide6.QtWidgets import QGraphicsView, QWidget

from app.gui.constellation.scene import ConstellationScene
from app.gui.constellation.view_model import StarState

REBUILD_MS = 400
"""At most this often the picture is drawn again while stars change."""
MAX_LINES = 600
"""Lines are drawn in the overview up to this many."""
_PAD = 4.0


class Minimap(QWidget):
    """The overview of `scene`; `main` is the view whose visible part it frames and moves."""

    def __init__(self, scene: ConstellationScene, main: QGraphicsView, parent: QWidget) -> None:
        super().__init__(parent)
        self.scene = scene
        self.main = main
        self.setAccessibleName("Constellation overview")
        self.setAccessibleDescription("The whole constellation; click to look at a part of it")
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self._picture: QPixmap | None = None
        self._to_widget = QTransform()
        self._rebuild = QTimer(self)
        self._rebuild.setSingleShot(True)
        self._rebuild.setInterval(REBUILD_MS)
        self._rebuild.timeout.connect(self.redraw)
        scene.refreshed.connect(self.stale)
        scene.sceneRectChanged.connect(lambda _: self.stale())

    # -------------------------------------------------------------- drawing

    def stale(self) -> None:
        """The constellation changed: draw the picture again soon (once for a burst)."""
        if self.isVisible() and not self._rebuild.isActive():
            self._rebuild.start()

    def redraw(self) -> None:
        """Draw the picture now."""
        self._rebuild.stop()
        area = self.scene.sceneRect()
        if area.isEmpty() or self.width() < 2 * _PAD or self.height() < 2 * _PAD:
            self._picture = None
            self.update()
            return
        scale = min(
            (self.width() - 2 * _PAD) / area.width(), (self.height() - 2 * _PAD) / area.height()
        )
        left = (self.width() - area.width() * scale) / 2
        top = (self.height() - area.height() * scale) / 2
        self._to_widget = QTransform(
            scale, 0, 0, scale, left - area.left() * scale, top - area.top() * scale
        )
        theme = self.scene.look.theme
        picture = QPixmap(self.size())
        picture.fill(theme.background)
        painter = QPainter(picture)
        painter.setTransform(self._to_widget)
        if len(self.scene.model.lines) <= MAX_LINES:  # more would be a grey fog here
            path = QPainterPath()
            for points in self.scene.line_points():
                path.moveTo(*points[0])
                for x, y in points[1:]:
                    path.lineTo(x, y)
            painter.setPen(QPen(theme.line, 0))
            painter.drawPath(path)
        m = self.scene.layout.metrics
        w, h = round(m.node_width), round(m.node_height)
        colours = {state: theme.accent(state) for state in StarState}
        stars = self.scene.model.stars
        for star_id, (x, y) in self.scene.places.items():  # plain ints: no objects made per star
            painter.fillRect(
                round(x) - w // 2, round(y) - h // 2, w, h, colours[stars[star_id].state]
            )
        painter.end()
        self._picture = picture
        self.update()

    def showEvent(self, event: object) -> None:
        self.redraw()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self.isVisible():
            self.redraw()

    def visible_area(self) -> QRectF:
        """The part of the scene the main view shows, in scene coordinates."""
        return self.main.mapToScene(self.main.viewport().rect()).boundingRect()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        theme = self.scene.look.theme
        if self._picture is not None:
            painter.drawPixmap(0, 0, self._picture)
        frame = self._to_widget.mapRect(self.visible_area().intersected(self.scene.sceneRect()))
        colour = QColor(theme.highlight)
        painter.setPen(QPen(colour, 2))
        colour.setAlpha(40)
        painter.setBrush(QBrush(colour))
        painter.drawRect(frame)
        painter.setPen(QPen(theme.muted, 1))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5))
        painter.end()

    # -------------------------------------------------------------- moving

    def map_to_scene(self, point: QPoint | QPointF) -> QPointF:
        inverted, _ = self._to_widget.inverted()
        return inverted.map(QPointF(point))

    def map_from_scene(self, point: QPointF) -> QPoint:
        return self._to_widget.map(point).toPoint()

    def _look_at(self, event: QMouseEvent) -> None:
        self.main.centerOn(self.map_to_scene(event.position()))
        self.update()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._look_at(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._look_at(event)
