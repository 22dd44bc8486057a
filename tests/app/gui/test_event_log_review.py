"""The desktop app's event log shows a review of a running plan as text: while it runs and
how it ended, a timed-out review among the problems (a real widget, offscreen)."""

from __future__ import annotations

from typing import Any

from agents.events import ReviewFinished, ReviewStarted
from app.gui.event_log import EventLog, describe


def test_reviews_are_logged_as_text_and_a_timeout_is_a_problem(qtbot: Any) -> None:
    log = EventLog()
    qtbot.addWidget(log)
    started = ReviewStarted(constellation_id="c1", reasons=["star s1 failed"], failed=["s1"],
                            deadline_s=10)  # fmt: skip
    timed_out = ReviewFinished(constellation_id="c1", outcome="timed_out", seconds=10.0)
    edited = ReviewFinished(constellation_id="c1", outcome="edited", version=2,
                            detail="retry with the right path", seconds=3.5)  # fmt: skip
    for event in (started, timed_out, edited):
        log.add(event)
    shown = log.shown_lines()
    assert shown[0].endswith("review.started         reviewing the failure of s1... (deadline 10s)")
    assert shown[1].endswith(
        "review: no answer within the deadline, the run goes on by its plan (10.0s)"
    )
    assert shown[2].endswith("review: edited to version 2 (3.5s): retry with the right path")
    assert describe(started).star == "s1"  # the star filter finds it
    assert [describe(e).problem for e in (started, timed_out, edited)] == [False, True, False]
    log.level.setCurrentIndex(1)  # problems only
    assert [line.split("  ", 1)[1] for line in log.shown_lines()] == [
        "review.finished        review: no answer within the deadline, the run goes on by its "
        "plan (10.0s)"
    ]
