"""The timeline: a lane per device, a bar per attempt (coloured by how it ended), live.

Drawn from the shown constellation's snapshot (attempt start and finish on the
orchestrator's clock); bars of attempts still running grow with `now`, which the window
gives from the newest event's timestamp.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from PySide6.QtCore import QRectF, Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPen
from PySide6.QtWidgets import QGraphicsScene, QGraphicsView, QWidget

from app.gui.safe_text import plain, tooltip

LANE = 26
LABEL_W = 120
PX_PER_S = 40.0
ATTEMPT_COLORS = {
    "running": QColor(80, 150, 240),
    "succeeded": QColor(70, 170, 90),
    "failed": QColor(220, 70, 60),
    "timed_out": QColor(230, 130, 40),
    "cancelled": QColor(200, 170, 40),
}


class Timeline(QGraphicsView):
    def __init__(self, now: Callable[[], float], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._now = now
        self._snapshot: Mapping[str, Any] = {}
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setAccessibleName("timeline")
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self._tick = QTimer(self)  # running bars grow while the run goes on
        self._tick.setInterval(500)
        self._tick.timeout.connect(self._redraw_if_running)
        self._tick.start()
        self.bars = 0

    def set_snapshot(self, snapshot: Mapping[str, Any]) -> None:
        self._snapshot = snapshot
        self.redraw()

    def _redraw_if_running(self) -> None:
        if self.isVisible() and any(
            a.get("finished_at") is None for _, _, a in _attempts(self._snapshot)
        ):
            self.redraw()

    def redraw(self) -> None:
        scene = self.scene()
        scene.clear()
        attempts = list(_attempts(self._snapshot))
        self.bars = len(attempts)
        if not attempts:
            scene.addText("No attempts yet.")
            return
        origin = min(float(a.get("started_at") or 0.0) for _, _, a in attempts)
        now = max(self._now(), max(float(a.get("finished_at") or 0.0) for _, _, a in attempts))
        devices = sorted({str(a.get("device")) for _, _, a in attempts})
        lane_of = {name: index for index, name in enumerate(devices)}
        font = QFont()
        font.setPointSize(8)
        palette = self.palette()
        text_color = palette.text().color()
        for name, index in lane_of.items():
            label = scene.addText(plain(name), font)
            label.setDefaultTextColor(text_color)
            label.setPos(2, index * LANE + 2)
            scene.addLine(LABEL_W, (index + 1) * LANE, LABEL_W + 2000, (index + 1) * LANE,
                          QPen(palette.mid().color()))  # fmt: skip
        for star_id, _star, attempt in attempts:
            start = float(attempt.get("started_at") or origin) - origin
            finished = attempt.get("finished_at")
            end = (float(finished) if finished is not None else now) - origin
            status = str(attempt.get("status") or "running")
            lane = lane_of[str(attempt.get("device"))]
            rect = QRectF(LABEL_W + start * PX_PER_S, lane * LANE + 4,
                          max(3.0, (end - start) * PX_PER_S), LANE - 8)  # fmt: skip
            color = ATTEMPT_COLORS.get(status, QColor(150, 150, 150))
            bar = scene.addRect(rect, QPen(color.darker(130)), QBrush(color))
            bar.setToolTip(
                tooltip(
                    f"{star_id} attempt {attempt.get('number')} on {attempt.get('device')}: "
                    f"{status}, {end - start:.2f}s"
                    + (f"\n{attempt.get('error')}" if attempt.get("error") else "")
                )
            )
            if rect.width() > 30:
                text = scene.addText(plain(star_id), font)
                text.setDefaultTextColor(QColor(255, 255, 255))
                text.setPos(rect.left() + 2, rect.top() - 3)


def _attempts(
    snapshot: Mapping[str, Any],
) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
    stars: Mapping[str, Any] = snapshot.get("stars") or {}
    return [
        (star_id, star, attempt)
        for star_id, star in stars.items()
        for attempt in star.get("attempts") or []
    ]
