"""The constellation as a `QGraphicsScene`: star and line items placed by the layout and
kept up to date from snapshots and events.

Events are cheap to take: `apply_event` updates the model at once and marks the stars it
touched; a short single-shot timer then refreshes only those items, so a burst of events
costs one repaint of what changed. A new snapshot keeps every star where it was: new ones
fade in, removed ones fade out, moved ones glide (`animate=False` skips the motion, as the
offscreen renderer does). The scene never changes run state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from PySide6.QtCore import QObject, QPointF, QRectF, QTimer, QVariantAnimation, Signal
from PySide6.QtGui import QBrush, QFont
from PySide6.QtWidgets import QGraphicsScene

from agents.events import Event
from app.gui.constellation.items import LineItem, Look, StarItem
from app.gui.constellation.layout import ConstellationLayout, LayoutMetrics, Placement
from app.gui.constellation.style import LIGHT, Theme
from app.gui.constellation.view_model import ConstellationModel, Edge

MARGIN = 40.0
FLUSH_MS = 40
"""How long changed stars wait to be redrawn together (at most 25 refreshes a second)."""
MOTION_MS = 320


class ConstellationScene(QGraphicsScene):
    """Stars and lines of one constellation at a time."""

    refreshed = Signal()
    """Items were brought up to date (after a snapshot, or after a batch of events)."""
    outdated = Signal(str)
    """An edit was applied to this constellation (its id): read a fresh snapshot and
    give it to `set_snapshot`."""

    def __init__(
        self,
        parent: QObject | None = None,
        *,
        metrics: LayoutMetrics | None = None,
        theme: Theme = LIGHT,
        font: QFont | None = None,
        animate: bool = True,
        flush_ms: int = FLUSH_MS,
    ) -> None:
        super().__init__(parent)
        self.model = ConstellationModel()
        self.layout = ConstellationLayout(metrics)
        self.look = Look(self.layout.metrics, theme, font)
        self.animate = animate
        self._stars: dict[str, StarItem] = {}
        self._lines: dict[Edge, LineItem] = {}
        self._dirty: set[str] = set()
        self._placed: dict[str, tuple[float, float]] = {}
        self._routes: dict[Edge, tuple[tuple[float, float], ...]] = {}
        """Where the last placement put each star (where its item is, motion finished)."""
        self._flush = QTimer(self)
        self._flush.setSingleShot(True)
        self._flush.setInterval(flush_ms)
        self._flush.timeout.connect(self.flush)
        self._motion: QVariantAnimation | None = None
        self._fading: list[QVariantAnimation] = []
        self._asked_version = 0
        self.setBackgroundBrush(QBrush(theme.background))

    # -------------------------------------------------------------- reading

    def star_item(self, star_id: str) -> StarItem | None:
        return self._stars.get(star_id)

    def line_item(self, source: str, target: str) -> LineItem | None:
        return self._lines.get((source, target))

    @property
    def star_items(self) -> dict[str, StarItem]:
        return dict(self._stars)

    @property
    def line_items(self) -> dict[Edge, LineItem]:
        return dict(self._lines)

    @property
    def pending(self) -> frozenset[str]:
        """Stars changed by events and not redrawn yet."""
        return frozenset(self._dirty)

    @property
    def places(self) -> dict[str, tuple[float, float]]:
        """Where each star's centre is (once any motion has finished), from the layout's
        data: for drawings that need no items (the minimap)."""
        return self._placed

    def line_points(self) -> Iterator[tuple[tuple[float, float], ...]]:
        """Each line's points (its ends and bends), from the layout's data."""
        half = self.layout.metrics.node_width / 2
        placed, routes = self._placed, self._routes
        for a, b in self.model.lines:
            (xa, ya), (xb, yb) = placed[a], placed[b]
            yield ((xa + half, ya), *routes.get((a, b), ()), (xb - half, yb))

    # -------------------------------------------------------------- changing

    def set_theme(self, theme: Theme) -> None:
        self.look.theme = theme
        self.setBackgroundBrush(QBrush(theme.background))
        self.update()

    def set_font(self, font: QFont) -> None:
        self.look.set_font(font)
        for star_id, item in self._stars.items():
            item.refresh(self.model.stars[star_id])

    def set_fleet(self, devices: Iterable[str]) -> None:
        """The fleet's device names in a stable order: their colours follow it."""
        self.model.set_fleet(devices)
        self._recolour()

    def set_snapshot(
        self,
        constellation: Mapping[str, Any],
        *,
        approvals: Iterable[tuple[str, str]] = (),
    ) -> Placement:
        """Show `constellation` (a serialised `Constellation`). A constellation other than
        the one shown (and not a retry of it) is drawn afresh; the same one, after an
        edit, keeps its places."""
        self._finish_motion()
        previous = self.model.id
        cid = str(constellation.get("id", ""))
        fresh = cid != previous and constellation.get("retry_of") != previous
        if fresh:
            self._clear()
            self.layout.reset()
        change = self.model.set_snapshot(constellation, approvals=approvals)
        self._dirty.intersection_update(self.model.stars)
        self._asked_version = self.model.version
        stars = list(self.model.stars)
        placement = self.layout.update(stars, list(self.model.lines))
        self._recolour()
        glide = self.animate and not placement.full
        for star_id in list(self._stars):
            if star_id not in self.model.stars:
                self._drop_star(star_id, fade=glide)
        starts: dict[str, QPointF] = {}
        placed, self._placed = self._placed, placement.positions
        self._routes = placement.routes
        for star_id, star in self.model.stars.items():
            item = self._stars.get(star_id)
            x, y = placement.positions[star_id]
            if item is None:
                item = StarItem(star, self.look)
                item.setPos(x, y)
                self.addItem(item)
                self._stars[star_id] = item
                if glide:
                    item.setOpacity(0.0)
                    starts[star_id] = item.pos()
            else:
                item.star = star
                if change.new_constellation or star_id in change.changed:
                    self._dirty.add(star_id)  # its texts are laid out with the next batch
                if placed.get(star_id) != (x, y):
                    if glide:
                        starts[star_id] = item.pos()
                    else:
                        item.setPos(x, y)
        moved = placement.full or placement.added or placement.moved or placement.removed
        if moved or change.lines_changed:
            self._update_lines(placement, change.lines_changed)
        if moved:
            self._set_rect(placement)
        if starts:
            self._glide(starts, placement)
        if self._dirty and not self._flush.isActive():
            self._flush.start()
        self.refreshed.emit()
        if self.model.outdated:  # an edit arrived while this snapshot was on its way
            QTimer.singleShot(0, self._ask_for_snapshot)
        return placement

    def apply_event(self, event: Event) -> None:
        """Follow one event; the items it changed are redrawn shortly, together."""
        changed = self.model.apply(event)
        if changed:
            self._dirty |= changed
            if not self._flush.isActive():
                self._flush.start()
        if self.model.newest_version > max(self._asked_version, self.model.version):
            self._ask_for_snapshot()

    def _ask_for_snapshot(self) -> None:
        if self.model.outdated and self.model.newest_version > self._asked_version:
            self._asked_version = self.model.newest_version
            self.outdated.emit(self.model.id)

    def flush(self) -> None:
        """Redraw the stars changed by events now."""
        self._flush.stop()
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        devices = self.model.devices
        if len(devices) != len(self.look.devices):
            self._recolour(refresh=False)
        for star_id in dirty:
            item = self._stars.get(star_id)
            star = self.model.stars.get(star_id)
            if item is not None and star is not None:
                item.refresh(star)
        self.refreshed.emit()

    # -------------------------------------------------------------- inside

    def _recolour(self, *, refresh: bool = True) -> None:
        devices = self.model.devices
        if list(self.look.devices) == devices:
            return
        self.look.set_devices(devices)
        if refresh:
            for item in self._stars.values():
                item.update()

    def _clear(self) -> None:
        for line in self._lines.values():
            line.detach()
            self.removeItem(line)
        for item in self._stars.values():
            self.removeItem(item)
        self._lines.clear()
        self._stars.clear()
        self._placed = {}
        self._routes = {}
        self._dirty.clear()

    def _drop_star(self, star_id: str, *, fade: bool) -> None:
        item = self._stars.pop(star_id)
        item.setSelected(False)
        for line in list(item.lines):
            self._drop_line(line.line.key, fade=fade)
        if fade:
            self._fade_out(item)
        else:
            self.removeItem(item)

    def _drop_line(self, key: Edge, *, fade: bool) -> None:
        line = self._lines.pop(key, None)
        if line is None:
            return
        line.detach()
        if fade:
            self._fade_out(line)
        else:
            self.removeItem(line)

    def _fade_out(self, item: Any) -> None:
        fade = QVariantAnimation(self)
        fade.setStartValue(1.0)
        fade.setEndValue(0.0)
        fade.setDuration(MOTION_MS)
        fade.valueChanged.connect(item.setOpacity)

        def gone() -> None:
            if item.scene() is self:
                self.removeItem(item)

        def done() -> None:
            gone()
            if fade in self._fading:
                self._fading.remove(fade)
            fade.deleteLater()

        fade.finished.connect(done)
        self._fading.append(fade)
        fade.start()

    def _update_lines(self, placement: Placement, kinds_changed: bool) -> None:
        """Add and drop line items; redraw those whose route changed (a kept line keeps
        its route unless one of its stars moved or is new)."""
        for key in [k for k in self._lines if k not in self.model.lines]:
            self._drop_line(key, fade=self.animate and not placement.full)
        touched = placement.added | placement.moved
        for key, line in self.model.lines.items():
            item = self._lines.get(key)
            if item is None:
                item = LineItem(line, self._stars[line.source], self._stars[line.target], self.look)
                self.addItem(item)
                self._lines[key] = item
            elif kinds_changed and item.line != line:
                item.set_line(line)
            if item.bends is None or key[0] in touched or key[1] in touched:
                bends = placement.routes.get(key, ())
                if bends != item.bends:
                    item.set_bends(bends)  # (moving stars redraw their own lines)

    def _set_rect(self, placement: Placement) -> None:
        m = self.layout.metrics
        if not placement.positions:
            self.setSceneRect(QRectF(0, 0, 1, 1))
            return
        xs = [x for x, _ in placement.positions.values()]
        ys = [y for _, y in placement.positions.values()]
        for route in placement.routes.values():
            ys += [y for _, y in route]
        rect = QRectF(
            min(xs) - m.node_width / 2,
            min(ys) - m.node_height / 2,
            max(xs) - min(xs) + m.node_width,
            max(ys) - min(ys) + m.node_height,
        )
        self.setSceneRect(rect.adjusted(-MARGIN, -MARGIN, MARGIN, MARGIN))

    def _glide(self, starts: dict[str, QPointF], placement: Placement) -> None:
        """New stars fade in, moved ones glide to their places."""
        added = placement.added
        ends = {s: QPointF(*placement.positions[s]) for s in starts}
        motion = QVariantAnimation(self)
        motion.setStartValue(0.0)
        motion.setEndValue(1.0)
        motion.setDuration(MOTION_MS)

        def step(value: object) -> None:
            t = float(value)  # type: ignore[arg-type]
            for star_id, start in starts.items():
                item = self._stars.get(star_id)
                if item is None:
                    continue
                if star_id in added:
                    item.setOpacity(t)
                else:
                    item.setPos(start + (ends[star_id] - start) * t)

        motion.valueChanged.connect(step)
        motion.finished.connect(lambda: step(1.0))
        motion.finished.connect(self.refreshed.emit)  # (the minimap draws the new places)
        self._motion = motion
        motion.start()

    def _finish_motion(self) -> None:
        """Jump every running animation to its end (a new snapshot starts from there)."""
        if self._motion is not None:
            motion, self._motion = self._motion, None
            motion.setCurrentTime(motion.duration())
            motion.stop()
        for fade in list(self._fading):
            fade.setCurrentTime(fade.duration())
