"""The constellation view as a person meets it: real widgets on the offscreen platform."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QContextMenuEvent, QHelpEvent, QImage, QPainter, QPalette
from PySide6.QtWidgets import QApplication, QToolTip
from pytestqt.qtbot import QtBot

from agents.events import (
    ApprovalNeeded,
    AttemptFailed,
    EditApplied,
    StarProgress,
    StarReady,
    StarStarted,
)
from app.gui.constellation.items import LineItem, StarItem
from app.gui.constellation.scene import FLUSH_CHUNK
from app.gui.constellation.style import icon_path, paint_icon
from app.gui.constellation.view import ZOOM_STEP, ConstellationView
from app.gui.constellation.view_model import StarState
from tests.app.gui.samples import CID, big, constellation, release, shown


@pytest.fixture
def view(qtbot: QtBot) -> Iterator[ConstellationView]:
    widget = ConstellationView()
    qtbot.addWidget(widget)
    widget.resize(900, 600)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def star_point(view: ConstellationView, star: str) -> QPoint:
    item = view.constellation_scene.star_item(star)
    assert item is not None
    return view.mapFromScene(item.sceneBoundingRect().center())


def icon_image(state: StarState) -> QImage:
    image = QImage(32, 32, QImage.Format.Format_RGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    paint_icon(painter, QRectF(0, 0, 32, 32), state, QColor("black"))
    painter.end()
    return image


def test_every_state_has_its_own_icon(qapp: QApplication) -> None:
    """Drawn in one colour, no two states look alike (colour is never the only cue)."""
    images = {state: icon_image(state) for state in StarState}
    for a, b in itertools.combinations(StarState, 2):
        differing = sum(
            images[a].pixel(x, y) != images[b].pixel(x, y) for x in range(32) for y in range(32)
        )
        assert differing > 20, (a, b, differing)
    for state in StarState:
        assert not icon_path(state)[0].isEmpty()


def test_a_snapshot_draws_each_star_and_line(view: ConstellationView) -> None:
    view.set_snapshot(release())
    scene = view.constellation_scene
    assert set(scene.star_items) == {
        "fetch", "build", "test", "bench", "ship", "notify", "report", "tidy"
    }  # fmt: skip
    assert {k for k in scene.line_items} >= {("fetch", "build"), ("bench", "report")}
    assert scene.line_item("bench", "report").line.kind == "completion"  # type: ignore[union-attr]
    build = scene.star_item("build")
    assert build is not None
    assert build.star.state is StarState.RETRYING or build.star.state is StarState.RUNNING
    assert build.star.badge == "#2"
    assert view.accessibleName() == "Constellation"
    assert "8 stars" in view.accessibleDescription()
    assert view.minimap.accessibleName() == "Constellation overview"
    assert "laptop" in view.legend.accessibleDescription()


def test_lines_are_drawn_distinctly_by_kind(view: ConstellationView) -> None:
    view.set_snapshot(release())
    scene = view.constellation_scene
    theme = scene.look.theme
    styles = {kind: theme.line_pen(kind).style() for kind in ("success", "completion", "condition")}
    assert len(set(styles.values())) == 3
    assert styles["success"] == Qt.PenStyle.SolidLine


def test_events_update_only_the_stars_they_name_and_are_batched(
    view: ConstellationView, qtbot: QtBot
) -> None:
    view.set_snapshot(release())
    scene = view.constellation_scene
    refreshed: dict[str, int] = {}
    original = StarItem.refresh

    def counting(item: StarItem, star: object) -> None:
        refreshed[item.star_id] = refreshed.get(item.star_id, 0) + 1
        original(item, star)  # type: ignore[arg-type]

    StarItem.refresh = counting  # type: ignore[method-assign]
    try:
        with qtbot.waitSignal(scene.refreshed, timeout=2000):
            view.apply_event(StarReady(constellation_id=CID, star_id="ship"))
            view.apply_event(StarStarted(constellation_id=CID, star_id="ship", attempt=1,
                                         device="laptop"))  # fmt: skip
            for i in range(50):
                view.apply_event(StarProgress(constellation_id=CID, star_id="ship", attempt=1,
                                              message=f"step {i}"))  # fmt: skip
            view.apply_event(StarReady(constellation_id="another", star_id="report"))
            assert scene.pending == {"ship"}
    finally:
        StarItem.refresh = original  # type: ignore[method-assign]
    assert refreshed == {"ship": 1}  # 53 events, one redraw of one star
    ship = scene.star_item("ship")
    assert ship is not None
    assert (ship.star.state, ship.star.device, ship.star.progress) == (
        StarState.RUNNING, "laptop", "step 49"
    )  # fmt: skip
    assert "step 49" in ship._detail
    assert scene.star_item("report").star.state is StarState.WAITING  # type: ignore[union-attr]


def test_retry_and_approval_show_on_the_item(view: ConstellationView, qtbot: QtBot) -> None:
    view.set_snapshot(release())
    scene = view.constellation_scene
    failed = AttemptFailed(
        constellation_id=CID,
        star_id="test",
        attempt=1,
        device="box",
        error="flaky",
        will_retry=True,
    )
    asked = ApprovalNeeded(
        constellation_id=CID,
        star_id="build",
        attempt=2,
        device="rig",
        request="r1",
        tool="shell.run",
        summary="rm -rf out",
    )
    view.apply_event(failed)
    view.apply_event(asked)
    scene.flush()
    test, build = scene.star_item("test"), scene.star_item("build")
    assert test is not None
    assert build is not None
    assert test.star.state is StarState.RETRYING
    assert "flaky" in shown(test.toolTip())
    assert build.star.state is StarState.APPROVAL
    assert "approval" in shown(build.toolTip())


def test_the_condition_lines_tooltip_shows_its_predicate(
    view: ConstellationView, qtbot: QtBot
) -> None:
    view.set_snapshot(release())
    view.set_zoom(1.0)
    line = view.constellation_scene.line_item("test", "tidy")
    assert line is not None
    assert "output.returncode = 0" in shown(line.toolTip())
    # Hovering the middle of the line asks the scene for that tooltip.
    middle = line.path().pointAtPercent(0.5)
    view.centerOn(middle)
    at = view.mapFromScene(middle)
    assert line in view.items(at)
    event = QHelpEvent(QEvent.Type.ToolTip, at, view.viewport().mapToGlobal(at))
    QApplication.sendEvent(view.viewport(), event)
    qtbot.waitUntil(lambda: "output.returncode = 0" in shown(QToolTip.text()), timeout=2000)
    QToolTip.hideText()


def test_zoom_keys_wheel_and_fit(view: ConstellationView, qtbot: QtBot) -> None:
    view.set_snapshot(big(60))
    scene_rect = view.constellation_scene.sceneRect()
    shown = view.mapToScene(view.viewport().rect()).boundingRect()
    pixel = 2 / view.zoom  # a pixel of rounding at the edges
    assert shown.adjusted(-pixel, -pixel, pixel, pixel).contains(scene_rect)  # fitted on show
    fitted = view.zoom
    qtbot.keyClick(view, Qt.Key.Key_Plus)
    assert view.zoom == pytest.approx(fitted * ZOOM_STEP)
    qtbot.keyClick(view, Qt.Key.Key_Minus)
    qtbot.keyClick(view, Qt.Key.Key_Minus)
    assert view.zoom == pytest.approx(fitted / ZOOM_STEP)
    qtbot.keyClick(view, Qt.Key.Key_0)
    assert view.zoom == pytest.approx(1.0)
    assert view.minimap.isVisible()  # at 100% the plan does not fit: the minimap shows
    qtbot.keyClick(view, Qt.Key.Key_F)
    assert view.zoom == pytest.approx(fitted)
    assert not view.minimap.isVisible()


def test_ctrl_wheel_zooms(view: ConstellationView, qtbot: QtBot) -> None:
    from PySide6.QtGui import QWheelEvent

    view.set_snapshot(release())
    before = view.zoom
    centre = QPointF(view.viewport().rect().center())
    wheel = QWheelEvent(
        centre,
        QPointF(view.viewport().mapToGlobal(centre.toPoint())),
        QPoint(0, 0),
        QPoint(0, 120),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.ControlModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(view.viewport(), wheel)
    assert view.zoom == pytest.approx(before * ZOOM_STEP)


def test_the_minimap_moves_the_view(view: ConstellationView, qtbot: QtBot) -> None:
    view.set_snapshot(big(200))
    view.set_zoom(1.0)
    qtbot.waitUntil(view.minimap.isVisible, timeout=2000)
    minimap = view.minimap
    target = view.constellation_scene.sceneRect().bottomRight() - QPointF(400, 300)
    qtbot.mouseClick(minimap, Qt.MouseButton.LeftButton, pos=minimap.map_from_scene(target))
    centre = view.mapToScene(view.viewport().rect().center())
    assert abs(centre.x() - target.x()) < 60
    assert abs(centre.y() - target.y()) < 60


def test_click_double_click_and_menu_signal_a_star(view: ConstellationView, qtbot: QtBot) -> None:
    view.set_snapshot(release())
    view.set_zoom(1.0)
    view.centerOn(view.constellation_scene.star_item("bench"))  # type: ignore[arg-type]
    at = star_point(view, "bench")
    with qtbot.waitSignal(view.star_selected, timeout=2000) as selected:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=at)
    assert selected.args == ["bench"]
    with qtbot.waitSignal(view.star_activated, timeout=2000) as activated:
        qtbot.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton, pos=at)
    assert activated.args == ["bench"]
    menu = QContextMenuEvent(QContextMenuEvent.Reason.Mouse, at, view.viewport().mapToGlobal(at))
    with qtbot.waitSignal(view.star_menu_requested, timeout=2000) as requested:
        QApplication.sendEvent(view.viewport(), menu)
    assert requested.args[0] == "bench"
    assert requested.args[1] == view.viewport().mapToGlobal(at)
    # the view itself changed nothing about the run
    assert view.star_state("bench") is StarState.FAILED


def test_keys_move_the_selection_and_enter_activates(view: ConstellationView, qtbot: QtBot) -> None:
    view.set_snapshot(release())
    view.select_star("fetch")
    qtbot.keyClick(view, Qt.Key.Key_Right)
    assert view.selected_star() in {"build", "test", "bench"}
    with qtbot.waitSignal(view.star_activated, timeout=2000) as activated:
        qtbot.keyClick(view, Qt.Key.Key_Return)
    assert activated.args == [view.selected_star()]


def test_an_edit_keeps_places_fades_out_the_removed_and_in_the_added(
    view: ConstellationView, qtbot: QtBot
) -> None:
    first = release()
    view.set_snapshot(first)
    scene = view.constellation_scene
    places = {s: item.pos() for s, item in scene.star_items.items()}
    with qtbot.waitSignal(view.snapshot_outdated, timeout=2000) as outdated:
        view.apply_event(EditApplied(constellation_id=CID, version=2, rationale="more"))
    assert outdated.args == [CID]
    stars = dict(first["stars"])
    leaving = scene.star_item("report")
    del stars["report"]
    stars["docs"] = {**stars["tidy"], "id": "docs", "after": ["ship"], "status": "pending"}
    lines = [line for line in first["lines"] if "report" not in (line["from"], line["to"])]
    edited = constellation(stars, lines, version=2)
    placement = view.set_snapshot(edited)
    assert placement.added == {"docs"}
    assert placement.removed == {"report"}
    for star, item in scene.star_items.items():
        if star in places:
            assert item.pos() == places[star], star
    docs = scene.star_item("docs")
    assert docs is not None
    assert docs.opacity() < 1.0
    assert leaving is not None
    assert leaving.scene() is scene
    qtbot.waitUntil(lambda: leaving.scene() is None and docs.opacity() == 1.0, timeout=3000)
    assert scene.line_item("bench", "report") is None


def test_a_retry_of_the_shown_constellation_keeps_the_places(
    view: ConstellationView, qtbot: QtBot
) -> None:
    first = release()
    view.set_snapshot(first)
    scene = view.constellation_scene
    places = {s: item.pos() for s, item in scene.star_items.items()}
    stars = {
        sid: {**star, "status": "pending", "attempts": []} for sid, star in first["stars"].items()
    }
    stars["fetch"] = first["stars"]["fetch"]  # kept from the first run
    retry = constellation(stars, first["lines"], cid="c0ffee99", retry_of=CID)
    placement = view.set_snapshot(retry)
    assert not placement.full
    assert {s: item.pos() for s, item in scene.star_items.items()} == places
    scene.flush()
    bench = scene.star_item("bench")
    assert bench is not None
    assert bench.star.state is StarState.WAITING
    assert "waiting" in shown(bench.toolTip())  # its texts were laid out again


def test_another_constellation_is_drawn_afresh(view: ConstellationView) -> None:
    view.set_snapshot(release())
    other = constellation({"x": {}, "y": {"after": ["x"]}}, cid="other")
    placement = view.set_snapshot(other)
    assert placement.full
    assert set(view.constellation_scene.star_items) == {"x", "y"}


def test_the_theme_follows_the_palette(view: ConstellationView) -> None:
    view.set_snapshot(release())
    assert not view.constellation_scene.look.theme.dark
    dark = QPalette()
    for role, colour in (
        (QPalette.ColorRole.Window, "#202124"),
        (QPalette.ColorRole.Base, "#1b1b1d"),
        (QPalette.ColorRole.Text, "#eeeeee"),
        (QPalette.ColorRole.WindowText, "#eeeeee"),
    ):
        dark.setColor(role, QColor(colour))
    view.setPalette(dark)
    theme = view.constellation_scene.look.theme
    assert theme.dark
    assert theme.background == QColor("#1b1b1d")
    assert theme.text == QColor("#eeeeee")


def test_devices_get_stable_legend_colours(view: ConstellationView) -> None:
    view.set_fleet(["rig", "laptop", "box", "idle"])
    view.set_snapshot(release())
    look = view.constellation_scene.look
    assert list(look.devices) == ["rig", "laptop", "box", "idle"]
    assert len({c.name() for c in look.devices.values()}) == 4


def test_many_stars_render_without_error(view: ConstellationView, qtbot: QtBot) -> None:
    view.set_snapshot(big(300))
    image = view.grab().toImage()
    assert image.width() > 0
    colours = {
        image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)
    }
    assert len(colours) > 5


def test_an_edit_redraws_only_what_it_changed(view: ConstellationView, qtbot: QtBot) -> None:
    """A snapshot after an edit that adds one star to 200: the new star and its line are
    made and drawn; no other star is laid out again, moved or redrawn, no other line
    rerouted."""
    first = big(200)
    view.set_snapshot(first)
    scene = view.constellation_scene
    scene.flush()
    places = {s: item.pos() for s, item in scene.star_items.items()}
    stars = {sid: {"after": star["after"]} for sid, star in first["stars"].items()}
    stars["new"] = {"after": ["s150"]}
    edited = constellation(stars, cid=first["id"], version=2)
    refreshed: list[str] = []
    routed: list[tuple[str, str]] = []
    refresh, set_bends = StarItem.refresh, LineItem.set_bends

    def counting_refresh(item: StarItem, star: object, **kw: bool) -> None:
        refreshed.append(item.star_id)
        refresh(item, star, **kw)  # type: ignore[arg-type]

    def counting_bends(item: LineItem, bends: tuple[tuple[float, float], ...]) -> None:
        routed.append(item.line.key)
        set_bends(item, bends)

    StarItem.refresh = counting_refresh  # type: ignore[method-assign]
    LineItem.set_bends = counting_bends  # type: ignore[method-assign]
    try:
        placement = view.set_snapshot(edited)
        scene.flush()
    finally:
        StarItem.refresh = refresh  # type: ignore[method-assign]
        LineItem.set_bends = set_bends  # type: ignore[method-assign]
    assert placement.added == {"new"}
    assert placement.moved == frozenset()
    assert refreshed == ["new"]
    assert routed == [("s150", "new")]
    assert all(scene.star_items[s].pos() == p for s, p in places.items())


def test_many_stars_changed_at_once_are_redrawn_a_few_per_turn(
    view: ConstellationView, qtbot: QtBot
) -> None:
    """A burst that changes 130 stars is redrawn in batches of at most `FLUSH_CHUNK`,
    one per turn of the event loop, so no single turn holds the loop long."""
    view.set_snapshot(big(200))
    scene = view.constellation_scene
    scene.flush()
    batches: list[int] = []
    refreshed: list[str] = []
    refresh = StarItem.refresh

    def counting(item: StarItem, star: object, **kw: bool) -> None:
        refreshed.append(item.star_id)
        refresh(item, star, **kw)  # type: ignore[arg-type]

    def batch_done() -> None:
        batches.append(len(refreshed) - sum(batches))

    scene.refreshed.connect(batch_done)
    StarItem.refresh = counting  # type: ignore[method-assign]
    try:
        for i in range(130):
            view.apply_event(StarReady(constellation_id="big-200", star_id=f"s{i}"))
        assert len(scene.pending) == 130
        qtbot.waitUntil(lambda: not scene.pending, timeout=5000)
    finally:
        StarItem.refresh = refresh  # type: ignore[method-assign]
        scene.refreshed.disconnect(batch_done)
    assert sorted(refreshed) == sorted(f"s{i}" for i in range(130))
    assert len(batches) >= 130 // FLUSH_CHUNK
    assert max(batches) <= FLUSH_CHUNK
    states = {item.star.state for s, item in scene.star_items.items() if s in refreshed}
    assert states == {StarState.READY}


def test_new_lines_fade_in_with_their_stars(view: ConstellationView, qtbot: QtBot) -> None:
    """A line an edit adds is drawn by the fade, not at once: the edit's own turn of the
    event loop paints nothing new."""
    first = release()
    view.set_snapshot(first)
    scene = view.constellation_scene
    stars = dict(first["stars"])
    stars["docs"] = {**stars["tidy"], "id": "docs", "after": ["ship"], "status": "pending"}
    view.set_snapshot(constellation(stars, first["lines"], version=2))
    line, docs = scene.line_item("ship", "docs"), scene.star_item("docs")
    assert line is not None
    assert docs is not None
    assert line.opacity() == 0.0
    assert docs.opacity() == 0.0
    qtbot.waitUntil(lambda: line.opacity() == 1.0 and docs.opacity() == 1.0, timeout=3000)
    assert {line.opacity() for line in scene.line_items.values()} == {1.0}
