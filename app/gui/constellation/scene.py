"""The constellation as a `QGraphicsScene`: star and line items placed by the layout and
kept up to date from snapshots and events.

Events are cheap to take: `apply_event` updates the model at once and marks the stars it
touched; a short single-shot timer then refreshes only those items, so a burst of events
costs one repaint of what changed (`FLUSH_CHUNK` stars per turn of the event loop: at
"fit" zoom a scattered star repaints the lines around it, some 0.3 ms, so a thousand
changed at once never hold the loop long). A new snapshot keeps every star where it
was: new ones fade in, removed ones fade out, moved ones glide (`animate=False` skips the
motion, as the offscreen renderer does). Applying one costs what it changed, not the
size of the constellation: only the items of stars and lines that are new, gone, moved or
drawn differently are touched. The scene never changes run state.
"""

from __future__ import annotations

import itertools
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
FLUSH_CHUNK = 16
"""Stars redrawn per turn of the event loop when many changed at once."""
MOTION_STEPS = 8
"""Opacity steps of a fade (each one repaints the star: no more than the eye needs)."""


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
        self._extent: tuple[float, float, float, float] | None = None
        """The least and greatest x and y of the stars' centres and the lines' bends."""
        self._flush = QTimer(self)
        self._flush.setSingleShot(True)
        self._flush.setInterval(flush_ms)
        self._flush.timeout.connect(self._flush_some)
        self._more = QTimer(self)  # the rest of a large batch, on the next turn
        self._more.setSingleShot(True)
        self._more.setInterval(0)
        self._more.timeout.connect(self._flush_some)
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
            item.refresh(self.model.stars[star_id], texts=True)

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
        stars = self.model.stars
        self._dirty.intersection_update(stars)
        self._asked_version = self.model.version
        placement = self.layout.update(list(stars), list(self.model.lines))
        self._recolour()
        glide = self.animate and not placement.full
        for star_id in [s for s in self._stars if s not in stars]:
            self._drop_star(star_id, fade=glide)
        # Only what the snapshot changed is looked at (all of it for a new drawing).
        everything = placement.full or change.new_constellation
        looked_at = stars if everything else placement.moved | change.changed
        starts: dict[str, QPointF] = {}
        placed, self._placed = self._placed, placement.positions
        routes, self._routes = self._routes, placement.routes
        created = [s for s in stars if s not in self._stars]
        for star_id in created:
            item = StarItem(stars[star_id], self.look)
            item.setPos(*placement.positions[star_id])
            self.addItem(item)
            self._stars[star_id] = item
            if glide:
                item.setOpacity(0.0)
                starts[star_id] = item.pos()
        for star_id in looked_at if not created else set(looked_at).difference(created):
            item = self._stars[star_id]
            item.star = stars[star_id]
            if change.new_constellation or star_id in change.changed:
                self._dirty.add(star_id)  # its texts are laid out with the next batch
            x, y = placement.positions[star_id]
            if placed.get(star_id) != (x, y):
                if glide:
                    starts[star_id] = item.pos()
                else:
                    item.setPos(x, y)
        moved = placement.full or placement.added or placement.moved or placement.removed
        appearing: list[LineItem] = []
        if moved or change.lines_changed:
            appearing = self._update_lines(placement, change.redrawn_lines, everything=everything)
        if moved:
            self._set_rect(placement, routes)
        if glide and (starts or appearing):
            for line in appearing:
                line.setOpacity(0.0)  # (painted first by the animation, not now)
            self._glide(starts, placement, appearing)
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
        """Redraw the stars changed by events now (all of them)."""
        self._flush.stop()
        self._more.stop()
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        self._redraw(dirty)

    def _flush_some(self) -> None:
        """Redraw up to `FLUSH_CHUNK` changed stars; the rest on the next turn of the
        event loop (the repaint between two turns stays short)."""
        if len(self._dirty) <= FLUSH_CHUNK:
            self.flush()
            return
        batch = set(itertools.islice(self._dirty, FLUSH_CHUNK))
        self._dirty -= batch
        self._redraw(batch)
        self._more.start()

    def _redraw(self, dirty: set[str]) -> None:
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
        """Device colours follow the model's devices; stars are repainted only when a
        device they may show changed colour (a device joining the end keeps the others')."""
        devices = self.model.devices
        if list(self.look.devices) == devices:
            return
        before = self.look.devices
        self.look.set_devices(devices)
        kept = all(self.look.devices.get(name) == colour for name, colour in before.items())
        if refresh and not kept:
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
        self._extent = None
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
        fade.valueChanged.connect(lambda value: item.setOpacity(_stepped(float(value))))

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

    def _update_lines(
        self, placement: Placement, redrawn: frozenset[Edge], *, everything: bool
    ) -> list[LineItem]:
        """Add and drop line items; redraw those whose kind or route changed (a kept line
        keeps its route unless one of its stars moved or is new). Returns the new ones."""
        lines = self.model.lines
        for key in [k for k in self._lines if k not in lines]:
            self._drop_line(key, fade=self.animate and not placement.full)
        routed: list[LineItem] = []
        for key in [k for k in lines if k not in self._lines]:
            line = lines[key]
            item = LineItem(line, self._stars[line.source], self._stars[line.target], self.look)
            self.addItem(item)
            self._lines[key] = item
            routed.append(item)
        made = list(routed)
        for key in redrawn:
            item = self._lines[key]
            if item.line != lines[key]:
                item.set_line(lines[key])
        if everything:
            routed = list(self._lines.values())
        else:
            for star_id in placement.added | placement.moved:
                routed += self._stars[star_id].lines
        for item in routed:
            bends = placement.routes.get(item.line.key, ())
            if item.bends is None or bends != item.bends:
                item.set_bends(bends)  # (moving stars redraw their own lines)
        return made

    def _set_rect(self, placement: Placement, previous: Mapping[Edge, object]) -> None:
        """The scene's rect: around every star and bend, with a margin. When stars were
        only added, the old extent grows by theirs and their lines' (`previous`: the
        routes before) instead of being measured again."""
        m = self.layout.metrics
        if not placement.positions:
            self._extent = None
            self.setSceneRect(QRectF(0, 0, 1, 1))
            return
        grows = not (placement.full or placement.moved or placement.removed)
        if grows and self._extent is not None:
            points = [placement.positions[s] for s in placement.added]
            for key in placement.routes.keys() - previous.keys():
                points += placement.routes[key]
            if not points:
                return
            left, top, right, bottom = self._extent
        else:
            points = list(placement.positions.values())
            for route in placement.routes.values():
                points += route
            left, top = right, bottom = points[0]
        for x, y in points:
            left, right = min(left, x), max(right, x)
            top, bottom = min(top, y), max(bottom, y)
        self._extent = (left, top, right, bottom)
        rect = QRectF(
            left - m.node_width / 2,
            top - m.node_height / 2,
            right - left + m.node_width,
            bottom - top + m.node_height,
        )
        self.setSceneRect(rect.adjusted(-MARGIN, -MARGIN, MARGIN, MARGIN))

    def _glide(
        self, starts: dict[str, QPointF], placement: Placement, lines: list[LineItem]
    ) -> None:
        """New stars and lines fade in, moved stars glide to their places."""
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
                    item.setOpacity(_stepped(t))
                else:
                    item.setPos(start + (ends[star_id] - start) * t)
            for line in lines:
                if line.scene() is self:
                    line.setOpacity(_stepped(t))

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


def _stepped(opacity: float) -> float:
    """An opacity in `MOTION_STEPS` steps: a fade repaints its item a few times, not at
    every frame of the animation."""
    return round(opacity * MOTION_STEPS) / MOTION_STEPS
