"""Drawing a constellation into PNG and SVG files with the view's own scene, without a
display: in process, in a fresh interpreter with no Qt application and no display
variables, and through `orrery show ID --png/--svg`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QApplication

from agents.constellation.fanout import expand_fan_out
from agents.constellation.plan_file import parse_plan
from app.gui.constellation.render import application, render_png, render_svg, svg_bytes
from app.gui.constellation.style import LIGHT
from app.gui.constellation.view_model import StarState
from devices.registry import DeviceInfo
from tests.app.gui.samples import constellation, release

ROOT = Path(__file__).resolve().parents[3]
PLANS = ROOT / "resources" / "plans"


def no_display_env(home: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("QT_QPA_PLATFORM", None)
    if home is not None:
        env.update(ORRERY_HOME=str(home), COLUMNS="200")
    return env


def share_of(image: QImage, colour: QColor, tolerance: int = 6) -> int:
    """How many pixels (of every 2nd row and column) are `colour`, give or take."""
    found = 0
    for y in range(0, image.height(), 2):
        for x in range(0, image.width(), 2):
            pixel = image.pixelColor(x, y)
            if (
                abs(pixel.red() - colour.red()) <= tolerance
                and abs(pixel.green() - colour.green()) <= tolerance
                and abs(pixel.blue() - colour.blue()) <= tolerance
            ):
                found += 1
    return found


def test_render_png_draws_the_stars_in_the_views_colours(
    qapp: QApplication, tmp_path: Path
) -> None:
    path = tmp_path / "release.png"
    render_png(release(), path)
    image = QImage(str(path))
    assert not image.isNull()
    assert image.width() > 600
    assert image.height() > 300
    colours = {
        image.pixel(x, y) for x in range(0, image.width(), 5) for y in range(0, image.height(), 5)
    }
    assert len(colours) > 50  # text, boxes, lines: not a blank page
    for state in (StarState.SUCCEEDED, StarState.FAILED, StarState.RUNNING, StarState.SKIPPED):
        assert share_of(image, LIGHT.fill(state)) > 100, state  # each state's box body
    assert application() is qapp  # the test's application was used, not a second one


def test_render_png_dark(qapp: QApplication, tmp_path: Path) -> None:
    path = tmp_path / "dark.png"
    render_png(release(), path, dark=True)
    image = QImage(str(path))
    corner = image.pixelColor(2, 2)
    assert corner.lightness() < 60


def test_render_svg_keeps_text_devices_and_line_kinds(qapp: QApplication, tmp_path: Path) -> None:
    path = tmp_path / "release.svg"
    render_svg(release(), path)
    text = path.read_text()
    assert text.startswith("<?xml")
    assert "<svg" in text
    assert "<title>release — running</title>" in text
    for word in ("Fetch", "Bench", "laptop", "rig", "box", "completion", "condition"):
        assert f">{word}" in text, word
    assert "stroke-dasharray" in text  # the dashed and dotted lines


def test_an_empty_constellation_still_draws(qapp: QApplication) -> None:
    data = constellation({"a": {}})
    data["stars"] = {}
    assert b"<svg" in svg_bytes(data)


def test_unwritable_path_is_an_os_error(qapp: QApplication, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing-dir"):
        render_png(release(), tmp_path / "missing-dir" / "x.png")


def test_render_without_display_or_application(tmp_path: Path) -> None:
    """A fresh interpreter: no QApplication, no DISPLAY, no QT_QPA_PLATFORM."""
    script = (
        "import sys, json\n"
        "from PySide6.QtWidgets import QApplication\n"
        "from app.gui.constellation.render import application, render_png\n"
        "assert QApplication.instance() is None\n"
        "render_png(json.load(open(sys.argv[1])), sys.argv[2])\n"
        "render_png(json.load(open(sys.argv[1])), sys.argv[2])\n"
        "print(QApplication.platformName(), application() is QApplication.instance())\n"
    )
    source = tmp_path / "c.json"
    source.write_text(json.dumps(release()))
    out = tmp_path / "out.png"
    done = subprocess.run(
        [sys.executable, "-c", script, str(source), str(out)],
        cwd=ROOT,
        env=no_display_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["offscreen", "True"]
    assert not QImage(str(out)).isNull()


def orrery(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=no_display_env(home),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.slow
def test_orrery_show_draws_png_and_svg_with_the_view(tmp_path: Path) -> None:
    ran = orrery("run", "--json", str(PLANS / "failure-cleanup.yaml"), home=tmp_path)
    assert ran.returncode == 1, ran.stderr
    cid = json.loads(ran.stdout.splitlines()[0])["constellation_id"]
    png, svg = tmp_path / "graph.png", tmp_path / "graph.svg"
    shown = orrery("show", cid[:8], "--png", str(png), "--svg", str(svg), home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"graph drawn to {png}" in shown.stdout
    assert f"graph drawn to {svg}" in shown.stdout
    assert "load_config -> cleanup (completion)" in shown.stdout
    image = QImage(str(png))
    assert not image.isNull()
    assert image.width() > 600
    assert share_of(image, LIGHT.fill(StarState.FAILED)) > 100  # load_config, in the view's red
    drawing = svg.read_text()
    document = json.loads(orrery("show", cid, "--json", home=tmp_path).stdout)
    devices = {a["device"] for s in document["stars"] for a in s["attempts"]}
    assert devices
    for name in (*devices, "Take the lock", "failure-cleanup — failed"):
        assert name in drawing, name
    bad = orrery("show", cid, "--png", str(tmp_path / "no" / "such" / "dir.png"), home=tmp_path)
    assert bad.returncode == 2
    assert "cannot write" in bad.stderr


JOINING_PLAN = """
name: hosts
stars:
  - id: host
    tool: shell.run
    on: {each: true, labels: [workers], joining: true}
    args: {cmd: hostname}
  - id: summary
    tool: fs.write
    args: {path: hosts.txt, content: "${host.output.stdout}"}
    after: [host]
"""


def test_a_fan_out_that_takes_joining_devices_is_noted_in_the_drawing(
    qapp: QApplication,
) -> None:
    plan = parse_plan(JOINING_PLAN)
    worker = DeviceInfo(
        name="borealis", tools=frozenset({"shell.run"}), labels=frozenset({"workers"})
    )
    expand_fan_out(plan, [worker])
    assert plan.fan_out is not None
    plan.fan_out.joined = {"host": ["cygnus"]}
    drawing = svg_bytes(plan.model_dump(mode="json", by_alias=True)).decode()
    assert ">Fan-out" in drawing
    assert ">host takes joining devices; branches on borealis, cygnus (joined)" in drawing
    assert ">Fan-out" not in svg_bytes(release()).decode()
