"""The main window: request box, the constellation view, and the panels around it.

Everything a person does here goes through `GuiSession` to the runtime interface; every
change on screen comes back from an event or a fresh snapshot, never from a widget
changing its own idea of the run.

A request in words is planned first and shown for review (the plan drawn, marked
proposed, and its stars listed with Start / Discard) unless the settings turn that off;
a plan file runs as written.

Shortcuts: Ctrl+Enter run the request (or propose it), Ctrl+Shift+Enter start the
proposed plan, Escape (in the proposal) discard it, Ctrl+O open a plan, Ctrl+. cancel
the run, Delete cancel the selected star, Ctrl+R retry the selected (failed) star, Ctrl+Shift+R
retry the run from its failures, Ctrl+P pin the selected star to a device, F fit,
Ctrl++ / Ctrl+- zoom, Ctrl+1…6 show a panel, Ctrl+Q quit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QInputDialog,
    QMainWindow,
    QMenu,
    QStyle,
    QSystemTrayIcon,
    QVBoxLayout,
    QWidget,
)

from agents.events import ConstellationFinished, Event, PlanningFinished, PlanningStarted
from app.control.messages import DeviceEntry, PendingApprovalInfo, Proposal, Snapshot
from app.gui.constellation.view import ConstellationView
from app.gui.devices_panel import DevicesPanel
from app.gui.event_log import EventLog, RunHeader
from app.gui.inspector import StarInspector
from app.gui.lists import ApprovalsInbox, HistoryPanel
from app.gui.plan_preview import PlanPreview
from app.gui.request_box import RequestBox
from app.gui.session import GuiSession
from app.gui.timeline import Timeline

if TYPE_CHECKING:
    from agents.models.manager import LazyModelManager
    from app.gui.settings_dialog import SettingsDialog

log = logging.getLogger("orrery.gui")


class MainWindow(QMainWindow):
    """`closed` fires when the window closes (the app then stops its runtime)."""

    closed = Signal()

    def __init__(
        self,
        session: GuiSession,
        settings: QSettings,
        *,
        where: str,
        server_url: str,
        data_dir: Path | None = None,
        models: LazyModelManager | None = None,
        apply_policy: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.session = session
        self.settings = settings
        self.server_url = server_url
        self.where = where
        self.data_dir = data_dir
        self.models = models
        self.apply_policy = apply_policy
        self.setWindowTitle(f"Orrery — {where}")
        self.setAccessibleName("Orrery")
        self.resize(1400, 900)

        self.request_box = RequestBox(settings, self)
        self.preview = PlanPreview(self)
        self.header = RunHeader(self)
        self.view = ConstellationView(self)
        self.view.setAccessibleName("constellation")
        central = QWidget(self)
        column = QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.header)
        column.addWidget(self.view, 1)
        column.addWidget(self.preview)
        column.addWidget(self.request_box)
        self.setCentralWidget(central)

        self.devices = DevicesPanel(lambda: self.server_url, self)
        self.inspector = StarInspector(self)
        self.timeline = Timeline(session.now, self)
        self.event_log = EventLog(self)
        self.approvals = ApprovalsInbox(self)
        self.history = HistoryPanel(self)
        self.docks: dict[str, QDockWidget] = {}
        area = Qt.DockWidgetArea
        for name, widget, where_to in (
            ("Devices", self.devices, area.LeftDockWidgetArea),
            ("Star", self.inspector, area.RightDockWidgetArea),
            ("Timeline", self.timeline, area.BottomDockWidgetArea),
            ("Events", self.event_log, area.BottomDockWidgetArea),
            ("Approvals", self.approvals, area.BottomDockWidgetArea),
            ("History", self.history, area.LeftDockWidgetArea),
        ):
            dock = QDockWidget(name, self)
            dock.setObjectName(f"dock-{name.lower()}")
            dock.setWidget(widget)
            dock.setAccessibleName(f"{name} panel")
            self.addDockWidget(where_to, dock)
            self.docks[name] = dock
        self.tabifyDockWidget(self.docks["Timeline"], self.docks["Events"])
        self.tabifyDockWidget(self.docks["Events"], self.docks["Approvals"])
        self.docks["Timeline"].raise_()

        self.tray = QSystemTrayIcon(self._icon(), self)
        self.tray.setToolTip("Orrery")
        if QSystemTrayIcon.isSystemTrayAvailable():
            self.tray.show()
        self.notifications: list[tuple[str, str]] = []  # what the tray said (for tests, too)

        self._actions()
        self._connect()
        self._restore()
        self.statusBar().showMessage(f"connected: {where}")

    # ---------------------------------------------------------------- wiring

    def _actions(self) -> None:
        bar = self.menuBar()
        run_menu = bar.addMenu("&Run")
        self.run_action = self._action(run_menu, "Run the request", "Ctrl+Return",
                                       self.request_box.submit)  # fmt: skip
        self._action(run_menu, "Open a plan…", QKeySequence.StandardKey.Open,
                     self.request_box.choose_plan)  # fmt: skip
        self.cancel_run_action = self._action(run_menu, "Cancel the run", "Ctrl+.",
                                              self.session.cancel_run)  # fmt: skip
        self.retry_run_action = self._action(
            run_menu, "Retry the run from its failures", "Ctrl+Shift+R", self.retry_run
        )
        run_menu.addSeparator()
        self.start_proposal_action = self._action(
            run_menu, "Start the proposed plan", "Ctrl+Shift+Return", self.session.start_proposal
        )
        self.discard_proposal_action = self._action(
            run_menu, "Discard the proposed plan", None, self.session.discard_proposal
        )
        self._reviewing(False)
        run_menu.addSeparator()
        self._action(run_menu, "Quit", QKeySequence.StandardKey.Quit, self.close)
        star_menu = bar.addMenu("&Star")
        self.cancel_star_action = self._action(star_menu, "Cancel the star", "Del",
                                               self.cancel_selected)  # fmt: skip
        self.retry_star_action = self._action(star_menu, "Retry the star", "Ctrl+R",
                                              self.retry_selected)  # fmt: skip
        self.pin_action = self._action(star_menu, "Pin to a device…", "Ctrl+P", self.pin_selected)
        view_menu = bar.addMenu("&View")
        self._action(view_menu, "Fit", "F", self.view.fit)
        self._action(view_menu, "Zoom in", QKeySequence.StandardKey.ZoomIn, self.view.zoom_in)
        self._action(view_menu, "Zoom out", QKeySequence.StandardKey.ZoomOut, self.view.zoom_out)
        view_menu.addSeparator()
        for number, (_name, dock) in enumerate(self.docks.items(), start=1):
            toggle = dock.toggleViewAction()
            toggle.setShortcut(f"Ctrl+{number}")
            view_menu.addAction(toggle)
        devices_menu = bar.addMenu("&Devices")
        self._action(devices_menu, "Enrol a device…", "Ctrl+E", self.devices._ask_name)
        settings_menu = bar.addMenu("S&ettings")
        self._action(settings_menu, "Models and settings…", "Ctrl+,", self.open_settings)

    def _action(self, menu: QMenu, text: str, shortcut: Any, slot: Any) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        menu.addAction(action)
        self.addAction(action)
        return action

    def _connect(self) -> None:
        session = self.session
        self.request_box.request.connect(self.run_request)
        self.request_box.plan_file.connect(session.submit)
        self.preview.start_requested.connect(session.start_proposal)
        self.preview.discard_requested.connect(session.discard_proposal)
        session.proposed.connect(self.show_proposal)
        session.proposal_closed.connect(self._proposal_closed)
        session.shown.connect(self.show_constellation)
        session.snapshot_changed.connect(self.refresh_constellation)
        session.run_event.connect(self.on_run_event)
        session.fleet_event.connect(self.on_fleet_event)
        session.devices_changed.connect(self.on_devices)
        session.approvals_changed.connect(self.on_approvals)
        session.history_changed.connect(self.history.set_history)
        session.failed.connect(self.say_problem)
        session.notice.connect(self.notify)
        session.planning.connect(self._planning)
        self.devices.enroll_requested.connect(self.enroll)
        self.devices.refresh_requested.connect(session.refresh_devices)
        self.approvals.decided.connect(session.approve)
        self.history.opened.connect(session.open)
        self.history.run_again.connect(session.run_again)
        self.view.star_selected.connect(lambda star: self.inspector.show_star(star or None))
        self.view.star_activated.connect(self._reveal_star)
        self.view.star_menu_requested.connect(self._star_menu)
        self.view.snapshot_outdated.connect(lambda _cid: session.refresh())

    # ---------------------------------------------------------------- requests

    def run_request(self, text: str) -> None:
        """A request in words from the request box: proposed for review first, unless
        the settings say to run such plans at once."""
        from app.gui.settings_dialog import preview_first

        if preview_first(self.settings):
            self.session.propose(text)
        else:
            self.session.submit(text)

    def show_proposal(self, proposal: Proposal) -> None:
        """A plan to review: drawn in the view, marked proposed, with its stars listed."""
        self.event_log.clear_run()
        self.inspector.show_star(None)
        self._shown_id = proposal.constellation
        plan = proposal.plan
        self.view.set_snapshot(plan)
        self.inspector.set_snapshot(plan)
        self.timeline.set_snapshot(plan)
        named = {star.device for star in proposal.stars if star.device != "any device"}
        self.header.show_proposal(proposal.name, len(proposal.stars), len(named))
        self._steering(False)
        self.preview.show_proposal(proposal)
        self._reviewing(True)
        self.statusBar().showMessage("planned: look at the plan, then Start or Discard it")

    def _proposal_closed(self) -> None:
        self.preview.clear()
        self._reviewing(False)
        self.statusBar().clearMessage()

    def _reviewing(self, shown: bool) -> None:
        self.start_proposal_action.setEnabled(shown)
        self.discard_proposal_action.setEnabled(shown)

    # ---------------------------------------------------------------- what arrives

    def show_constellation(self, snapshot: Snapshot) -> None:
        """A constellation to show (a new run, one from history, or an edited plan)."""
        if snapshot.constellation_id != getattr(self, "_shown_id", None):
            self.event_log.clear_run()
            self.inspector.show_star(None)
        self._shown_id = snapshot.constellation_id
        self.refresh_constellation(snapshot)

    def refresh_constellation(self, snapshot: Snapshot) -> None:
        self.view.set_snapshot(snapshot.constellation, approvals=self._waiting(snapshot))
        self.inspector.set_snapshot(snapshot.constellation)
        self.timeline.set_snapshot(snapshot.constellation)
        now = self.session.now() if self.session.current_live else None
        self.header.show_run(snapshot.name, snapshot.status, snapshot.constellation, now)
        self._steering(snapshot.live and snapshot.status in ("pending", "running"))

    def on_run_event(self, event: Event) -> None:
        self.view.apply_event(event)
        self.inspector.on_event(event)
        self.event_log.add(event)
        if isinstance(event, ConstellationFinished):
            self._steering(False)

    def on_fleet_event(self, event: Event) -> None:
        if event.constellation_id != self.session.current:  # the run's own come separately
            self.event_log.add(event)
        if isinstance(event, PlanningStarted):
            self.statusBar().showMessage(f"planning with the model: {event.request}")
        elif isinstance(event, PlanningFinished):
            message = f"planned in {event.seconds:.1f}s"
            if event.error:
                message = f"planning failed: {event.error}"
            elif self.preview.proposal is not None:
                message += ": look at the plan, then Start or Discard it"
            self.statusBar().showMessage(message, 10000)

    def say_problem(self, message: str) -> None:
        self.statusBar().showMessage(message, 15000)
        log.warning("%s", message)

    def notify(self, title: str, message: str) -> None:
        self.notifications.append((title, message))
        if self.tray.isVisible():
            self.tray.showMessage(title, message, QSystemTrayIcon.MessageIcon.Information, 5000)

    def _planning(self, request: str) -> None:
        if request:
            self.statusBar().showMessage(f"planning: {request}")
            self.request_box.run_button.setEnabled(False)
        else:
            self.statusBar().clearMessage()
            self.request_box.run_button.setEnabled(True)

    def on_approvals(self, approvals: list[PendingApprovalInfo]) -> None:
        self._approvals = approvals
        self.approvals.set_approvals(approvals)
        if self.session.snapshot is not None:
            self.refresh_constellation(self.session.snapshot)

    def on_devices(self, devices: list[DeviceEntry]) -> None:
        self.devices.set_devices(devices)
        self.view.set_fleet(d.name for d in devices)

    def _waiting(self, snapshot: Snapshot) -> list[tuple[str, str]]:
        return [
            (a.star, a.request)
            for a in getattr(self, "_approvals", [])
            if a.constellation == snapshot.constellation_id
        ]

    # ---------------------------------------------------------------- steering

    def selected_star(self) -> str | None:
        return self.inspector.star_id

    def select_star(self, star_id: str) -> None:
        """Select a star in the view and show it in the inspector."""
        self.view.select_star(star_id)
        self.inspector.show_star(star_id)

    def cancel_selected(self) -> None:
        star = self.selected_star()
        if star is not None:
            self.session.cancel_star(star)

    def retry_selected(self) -> None:
        star = self.selected_star()
        if star is not None:
            self.session.retry(star)

    def retry_run(self) -> None:
        self.session.retry(None)

    def pin_selected(self) -> None:
        star = self.selected_star()
        names = self.devices.names()
        if star is None or not names:
            return
        device, ok = QInputDialog.getItem(self, "Pin to a device", f"Run {star} on:", names, 0,
                                          False)  # fmt: skip
        if ok and device:
            self.session.pin(star, device)

    def enroll(self, name: str) -> None:
        def show(token: str) -> None:
            self.devices.show_token(name, token)

        self.session.enroll(name, show)

    def _star_menu(self, star_id: str, where: Any) -> None:
        self.inspector.show_star(star_id)
        menu = QMenu(self)
        menu.addAction("Cancel this star", lambda: self.session.cancel_star(star_id))
        menu.addAction("Retry from this star", lambda: self.session.retry(star_id))
        pin = menu.addMenu("Pin to device")
        for name in self.devices.names():
            pin.addAction(name, partial(self.session.pin, star_id, name))
        menu.addAction("Show details", lambda: self._reveal_star(star_id))
        menu.popup(where)

    def _reveal_star(self, star_id: str) -> None:
        self.inspector.show_star(star_id)
        self.docks["Star"].show()
        self.docks["Star"].raise_()

    def _steering(self, live: bool) -> None:
        self.cancel_run_action.setEnabled(live)
        self.pin_action.setEnabled(live)
        self.cancel_star_action.setEnabled(live)

    def open_settings(self) -> SettingsDialog:
        from app.config import data_dir as default_data_dir
        from app.gui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(
            self.settings,
            data_dir=self.data_dir or default_data_dir(None),
            connection=self.where,
            models=self.models,
            apply_policy=self.apply_policy,
            parent=self,
        )
        dialog.show()
        dialog._spawn(dialog.refresh())
        return dialog

    def show_preparation(self, what: str) -> None:
        """A step of the embedded model's first-use preparation, in the status bar."""
        self.statusBar().showMessage(what, 10000)

    # ---------------------------------------------------------------- comfort

    def _icon(self) -> QIcon:
        return self.style().standardIcon(QStyle.StandardPixmap.SP_ComputerIcon)

    def _restore(self) -> None:
        geometry = self.settings.value("window/geometry")
        state = self.settings.value("window/state")
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.tray.hide()
        super().closeEvent(event)
        self.closed.emit()
