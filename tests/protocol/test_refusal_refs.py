"""A refusal names the refused message, so a device can tell which result was final."""

from __future__ import annotations

from protocol.auth import enroll
from protocol.messages import ErrorCode, HelloBody
from protocol.session import (
    DeviceAuthenticated,
    DeviceSession,
    PeerError,
    ServerSession,
    SessionEvent,
    ref_of,
)
from protocol.tasks import TaskAssignment, TaskResult


def test_not_your_task_refusal_carries_the_result_message_id() -> None:
    token, key = enroll("dev")
    server = ServerSession(keys=lambda name: key if name == "dev" else None, now=lambda: 0.0)
    device = DeviceSession(
        hello=HelloBody(device="dev", versions=[1]), token=token, now=lambda: 0.0
    )
    device_events: list[SessionEvent] = []

    def pump() -> None:
        moved = True
        while moved:
            moved = False
            for frame in device.data_to_send():
                server.receive_frame(frame)
                moved = True
            for event in server.events_received():
                if isinstance(event, DeviceAuthenticated):
                    server.welcome()
            for frame in server.data_to_send():
                device.receive_frame(frame)
                moved = True
            device_events.extend(device.events_received())

    device.start()
    pump()
    assignment = TaskAssignment(
        constellation_id="c", star_id="s", attempt=1, device="dev", tool="shell.run"
    )
    server.assign(assignment)
    pump()
    server.cancel(ref_of(assignment), "fenced: timed out")
    pump()
    message_id = device.send_result(TaskResult.success(assignment, {"late": True}))
    pump()
    refusals = [e for e in device_events if isinstance(e, PeerError)]
    assert [(e.code, e.ref) for e in refusals] == [(ErrorCode.NOT_YOUR_TASK, message_id)]
