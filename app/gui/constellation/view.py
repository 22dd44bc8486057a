"""`ConstellationView`: the constellation drawing the main window embeds.

Give it a snapshot (`set_snapshot`) and then the constellation's events (`apply_event`);
it never changes run state itself: it reports what the person points at through
`star_selected`, `star_activated` (double-click, Enter) and `star_menu_requested` (the
window builds the Cancel / Retry / ... menu), and `snapshot_outdated` when an edit was
applied and a fresh snapshot is needed.

Keys: Ctrl+wheel, + and - zoom; F fits; 0 is 100%; drag pans; arrows move the selection
along lines (left/right) and within a column (up/down); L shows or hides the legend. The
minimap appears in a corner when the drawing does not fit the view.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from PySide6.QtCore import QEvent, QPoint, QPointF, Qt, Signal
from PySide6.QtGui import (
    QContextMenuEvent,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPalette,
    QResizeEvent,
    QShowEvent,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import QApplication, QGraphicsView, QWidget

from agents.events import Event
from app.gui.constellation.items import StarItem
from app.gui.constellation.layout import Placement
from app.gui.constellation.legend import LegendOverlay
from app.gui.constellation.minimap import Minimap
from app.gui.constellation.scene import ConstellationScene
from app.gui.constellation.style import theme_for
from app.gui.constellation.view_model import StarState

MIN_ZOOM = 0.02
MAX_ZOOM = 4.0
ZOOM_STEP = 1.25
MINIMAP_SIZE = (220, 150)
_CORNER = 10


class ConstellationView(QGraphicsView):
    """A live, read-only drawing of one constellation."""

    star_selected = Signal(str)
    """The selected star's id ("" when the selection is cleared)."""
    star_activated = Signal(str)
    """A star was double-clicked (or Enter pressed on it): open it."""
    star_menu_requested = Signal(str, QPoint)
    """A context menu is wanted for a star, at this global position."""
    snapshot_outdated = Signal(str)
    """An edit was applied to the constellation shown (its id): read a fresh snapshot
    and call `set_snapshot` with it."""
    zoom_changed = Signal(float)

    def __init__(self, parent: QWidget | None = None, *, animate: bool = True) -> None:
        scene = ConstellationScene(theme=theme_for(self._palette_of(parent)), animate=animate)
        super().__init__(scene, parent)
        scene.setParent(self)
        self._scene = scene
        scene.set_font(self.font())
        self.setAccessibleName("Constellation")
        self.setAccessibleDescription("No constellation shown")
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setCacheMode(QGraphicsView.CacheModeFlag.CacheBackground)
        self.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.legend = LegendOverlay(self, scene.model, scene.look)
        self.minimap = Minimap(scene, self, self)
        self.minimap.resize(*MINIMAP_SIZE)
        self.minimap.hide()
        self._fit_pending = True
        self._selecting = False
        scene.selectionChanged.connect(self._selection_changed)
        scene.refreshed.connect(self._refreshed)
        scene.outdated.connect(self.snapshot_outdated)
        self.horizontalScrollBar().valueChanged.connect(self._viewport_moved)
        self.verticalScrollBar().valueChanged.connect(self._viewport_moved)

    @staticmethod
    def _palette_of(parent: QWidget | None) -> QPalette:
        return parent.palette() if parent is not None else QApplication.palette()

    # -------------------------------------------------------------- feeding

    @property
    def constellation_scene(self) -> ConstellationScene:
        return self._scene

    def set_snapshot(
        self, constellation: Mapping[str, Any], *, approvals: Iterable[tuple[str, str]] = ()
    ) -> Placement:
        """Show `constellation` (`Snapshot.constellation`); `approvals` are the (star,
        request) pairs waiting for a person. Fits the view to a new constellation."""
        before = self._scene.model.id
        placement = self._scene.set_snapshot(constellation, approvals=approvals)
        if placement.full and self._scene.model.id != before:
            self._fit_pending = True
        if self._fit_pending and self.isVisible():
            self.fit()
        self._place_overlays()
        return placement

    def apply_event(self, event: Event) -> None:
        """Follow one event of the constellation shown (others are ignored)."""
        self._scene.apply_event(event)

    def set_fleet(self, devices: Iterable[str]) -> None:
        """The fleet's device names in a stable order (legend colours follow it)."""
        self._scene.set_fleet(devices)
        self.legend.refresh()

    def select_star(self, star_id: str) -> None:
        """Select a star (and bring it into view) without emitting `star_selected`."""
        item = self._scene.star_item(star_id)
        self._selecting = True
        try:
            self._scene.clearSelection()
            if item is not None:
                item.setSelected(True)
                self.ensureVisible(item, 40, 40)
        finally:
            self._selecting = False

    def selected_star(self) -> str:
        for item in self._scene.selectedItems():
            if isinstance(item, StarItem):
                return item.star_id
        return ""

    # -------------------------------------------------------------- zoom

    @property
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, zoom: float) -> None:
        zoom = min(MAX_ZOOM, max(MIN_ZOOM, zoom))
        factor = zoom / self.zoom
        if abs(factor - 1) > 1e-9:
            self.scale(factor, factor)
            self._zoomed()

    def zoom_in(self) -> None:
        self.set_zoom(self.zoom * ZOOM_STEP)

    def zoom_out(self) -> None:
        self.set_zoom(self.zoom / ZOOM_STEP)

    def fit(self) -> None:
        """Show the whole drawing above the legend (never larger than 100%)."""
        self._fit_pending = False
        rect = self._scene.sceneRect()
        if rect.isEmpty():
            return
        self._place_overlays()
        viewport = self.viewport().rect()
        reserve = self.legend.height() + _CORNER if not self.legend.isHidden() else 0
        zoom = min(
            viewport.width() / rect.width(),
            max(40, viewport.height() - reserve) / rect.height(),
            1.0,
        )
        self.setTransform(QTransform.fromScale(max(zoom, MIN_ZOOM), max(zoom, MIN_ZOOM)))
        self.centerOn(rect.center() + QPointF(0, reserve / 2 / self.zoom))
        self._zoomed()

    def _zoomed(self) -> None:
        self._place_overlays()
        self.minimap.update()
        self.zoom_changed.emit(self.zoom)

    # -------------------------------------------------------------- events

    def wheelEvent(self, event: QWheelEvent) -> None:
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            steps = event.angleDelta().y() / 120
            if steps:
                self.set_zoom(self.zoom * ZOOM_STEP**steps)
            event.accept()
            return
        super().wheelEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom_in()
        elif key == Qt.Key.Key_Minus:
            self.zoom_out()
        elif key == Qt.Key.Key_F:
            self.fit()
        elif key == Qt.Key.Key_0:
            self.set_zoom(1.0)
        elif key == Qt.Key.Key_L:
            self.legend.setHidden(not self.legend.isHidden())
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            star = self.selected_star()
            if star:
                self.star_activated.emit(star)
        elif key in (Qt.Key.Key_Left, Qt.Key.Key_Right, Qt.Key.Key_Up, Qt.Key.Key_Down):
            self._step(key)
        else:
            super().keyPressEvent(event)

    def _step(self, key: int) -> None:
        """Move the selection to a neighbour: along a line, or within the column."""
        stars = self._scene.star_items
        if not stars:
            return
        current = stars.get(self.selected_star())
        if current is None:
            target = min(stars.values(), key=lambda i: (i.pos().x(), i.pos().y()))
        elif key in (Qt.Key.Key_Left, Qt.Key.Key_Right):
            right = key == Qt.Key.Key_Right
            near = [
                line.target if right else line.source
                for line in current.lines
                if (line.source is current) == right
            ]
            if not near:
                return
            here = current.pos().y()
            target = min(near, key=lambda i: (abs(i.pos().y() - here), i.pos().y()))
        else:
            down = key == Qt.Key.Key_Down
            x, y = current.pos().x(), current.pos().y()
            column = [i for i in stars.values() if i.pos().x() == x and (i.pos().y() > y) == down]
            column = [i for i in column if i.pos().y() != y]
            if not column:
                return
            target = min(column, key=lambda i: abs(i.pos().y() - y))
        self._scene.clearSelection()
        target.setSelected(True)
        self.ensureVisible(target, 40, 40)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        item = self._star_at(event.position().toPoint())
        if item is not None:
            self.star_activated.emit(item.star_id)
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:
        if event.reason() == QContextMenuEvent.Reason.Keyboard:
            star = self.selected_star()
            item = self._scene.star_item(star) if star else None
            if item is None:
                return
            at = self.mapFromScene(item.sceneBoundingRect().center())
            self.star_menu_requested.emit(star, self.viewport().mapToGlobal(at))
            return
        item = self._star_at(event.pos())
        if item is None:
            return
        if not item.isSelected():
            self._scene.clearSelection()
            item.setSelected(True)
        self.star_menu_requested.emit(item.star_id, event.globalPos())

    def _star_at(self, point: QPoint) -> StarItem | None:
        for item in self.items(point):
            if isinstance(item, StarItem):
                return item
        return None

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self._scene.set_theme(theme_for(self.palette()))
            self.legend.update()
            self.minimap.redraw()
            self.resetCachedContent()
        elif event.type() == QEvent.Type.FontChange:
            self._scene.set_font(self.font())
            self.legend.refresh()
        super().changeEvent(event)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._fit_pending:
            self.fit()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._fit_pending:
            self.fit()
        self._place_overlays()

    # -------------------------------------------------------------- inside

    def _selection_changed(self) -> None:
        if not self._selecting:
            self.star_selected.emit(self.selected_star())

    def _refreshed(self) -> None:
        model = self._scene.model
        counts = model.counts()
        parts = [f"{n} {state.label}" for state, n in counts.items() if n]
        summary = f"{model.name or model.id}: {model.status}, {len(model.stars)} stars"
        self.setAccessibleDescription(f"{summary}: {', '.join(parts)}" if parts else summary)
        self.legend.refresh()
        self._place_overlays()

    def _viewport_moved(self) -> None:
        if self.minimap.isVisible():
            self.minimap.update()  # the frame only

    def _place_overlays(self) -> None:
        """The minimap in the bottom-right corner, shown only when the drawing does not
        fit in the view; the legend in the bottom-left corner, as wide as the room left."""
        viewport = self.viewport().geometry()
        width, height = MINIMAP_SIZE
        self.minimap.move(
            viewport.right() - width - _CORNER + 1, viewport.bottom() - height - _CORNER + 1
        )
        slack = 3 / max(self.zoom, MIN_ZOOM)  # rounding at the edges is not "off view"
        shown = self.mapToScene(self.viewport().rect()).boundingRect()
        shown = shown.adjusted(-slack, -slack, slack, slack)
        needed = not shown.contains(self._scene.sceneRect()) and bool(self._scene.star_items)
        self.minimap.setVisible(needed)
        room = viewport.width() - 2 * _CORNER - (width + _CORNER if needed else 0)
        self.legend.set_width(room)
        self.legend.move(
            viewport.left() + _CORNER, viewport.bottom() - self.legend.height() - _CORNER + 1
        )

    def star_state(self, star_id: str) -> StarState | None:
        star = self._scene.model.stars.get(star_id)
        return star.state if star is not None else None
