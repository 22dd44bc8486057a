"""The runtime: the orchestrator and everything around it, behind `app.interface.OrreryApi`.

`Runtime` (core) is the object; `open_runtime` (assembly) builds one from a data dir;
`app.endpoint.Endpoint` serves it to devices and control clients on a port;
`InProcessDevice` (this_machine) makes this machine a device without a process;
`EventJournal` (journal) replays events to late subscribers; `JoiningDevices`
(joining_devices) gives devices that join the branches of fan-outs that take them.
docs/runtime.md is the guide for front-end authors.
"""

from app.runtime.approval_policy import ApprovalPolicy, approve_all, ask_a_person, refuse_all
from app.runtime.assembly import RuntimeOptions, RuntimeParts, ThisMachine, open_runtime
from app.runtime.core import DevicesMissing, Planner, Runtime, StreamStart
from app.runtime.this_machine import InProcessDevice

__all__ = [
    "ApprovalPolicy",
    "DevicesMissing",
    "InProcessDevice",
    "Planner",
    "Runtime",
    "RuntimeOptions",
    "RuntimeParts",
    "StreamStart",
    "ThisMachine",
    "approve_all",
    "ask_a_person",
    "open_runtime",
    "refuse_all",
]
