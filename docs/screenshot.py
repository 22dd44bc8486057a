"""Make docs/images/main-window.png: the desktop app with a running constellation of 30 stars.

    .venv/bin/python docs/screenshot.py [--out docs/images/main-window.png]

It builds an embedded runtime in a temporary data dir with four in-process devices (so no
network and no device processes are needed), submits a 30-star plan whose stars take a
few seconds each (one fails and is retried, one waits for approval), waits until the run
is in full swing, and grabs the window offscreen (QT_QPA_PLATFORM=offscreen).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import BaseModel
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

DEVICES = (("atlas", ("reports",)), ("borealis", ("build",)), ("cygnus", ("storage",)),
           ("dorado", ("build",)))  # fmt: skip


def plan() -> str:
    """30 stars: four collection branches fanning into summaries, a report at the end."""
    lines = ["name: nightly-fleet-report", "rationale: collect, check, summarise, report",
             "stars:"]  # fmt: skip
    for branch, (device, _) in enumerate(DEVICES):
        for step in range(6):
            star = f"{device}-{step}"
            after = f"[{device}-{step - 1}]" if step else "[]"
            seconds = 2 + (branch + step) % 4
            cmd = f"sleep {seconds}; echo {star} done"
            if device == "cygnus" and step == 3:
                cmd = "sleep 2; echo checking the archive; exit 3"
            lines += [f"  - id: {star}", f"    on: {device}", "    tool: shell.run",
                      f"    args: {{cmd: \"{cmd}\"}}", f"    after: {after}",
                      "    retries: 1"]  # fmt: skip
    for index, pair in enumerate((("atlas", "borealis"), ("cygnus", "dorado"))):
        lines += [f"  - id: summary-{index}", "    tool: fs.write",
                  f"    args: {{path: summary-{index}.txt, content: ok}}",
                  f"    after: [{pair[0]}-5, {pair[1]}-5]"]  # fmt: skip
    lines += ["  - id: approve-upload", "    on: atlas", "    tool: shell.run",
              "    args: {cmd: \"echo upload\"}", "    after: [summary-0]",
              "  - id: report", "    tool: fs.write",
              "    args: {path: report.txt, content: done}",
              "    after: [summary-0, summary-1, approve-upload]",
              "lines:", "  - {from: summary-1, to: report, kind: completion}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def careful(tool: str, args: BaseModel) -> str | None:
    command = str(args.model_dump().get("cmd", ""))
    return f"run {command!r}" if "upload" in command else None


async def shoot(out: Path, wait: float) -> None:
    from app.gui.session import GuiSession
    from app.gui.window import MainWindow
    from app.runtime import InProcessDevice, Runtime
    from memory import Store

    with tempfile.TemporaryDirectory() as home, Store.open_path(Path(home) / "o.db") as store:
        devices = [
            InProcessDevice(
                Path(home) / name, name=name, labels=labels, max_tasks=2, needs_approval=careful
            )
            for name, labels in DEVICES
        ]
        async with Runtime(store, devices) as runtime:
            session = GuiSession(runtime)
            settings = QSettings(str(Path(home) / "gui.ini"), QSettings.Format.IniFormat)
            window = MainWindow(session, settings, where="this machine (4 devices)",
                                server_url="ws://127.0.0.1:8765")  # fmt: skip
            window.resize(1920, 1080)
            window.show()
            session.start()
            session.submit(plan())
            await asyncio.sleep(wait)
            window.docks["Events"].raise_()
            if session.snapshot is not None:
                window.select_star("cygnus-3")
            await asyncio.sleep(0.5)
            out.parent.mkdir(parents=True, exist_ok=True)
            window.grab().save(str(out))
            print(f"wrote {out}")
            window.close()
            await session.stop()


def main() -> None:
    import qasync

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "images" /
                        "main-window.png")  # fmt: skip
    parser.add_argument("--wait", type=float, default=14.0, help="seconds into the run")
    options = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    app.setQuitOnLastWindowClosed(False)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with loop:
        loop.run_until_complete(shoot(options.out, options.wait))


if __name__ == "__main__":
    main()
