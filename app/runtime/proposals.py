"""Plans made from words that wait for a person: held until started or discarded.

`ProposalBook` holds each proposal (the planned constellation and the request it
realises) under an id of its own for at most `ttl` seconds, and at most `limit` of them:
`sweep` drops the expired ones, and the oldest while there is no room for a new one,
and returns what it dropped (the runtime then forgets their planning). `waiting` gives
a proposal that still waits; for any other id it raises `ProposalGone`, which says why
(never made here, expired, dropped, discarded, or started already as constellation C)
and what to do. `end` takes a waiting proposal out and remembers why, so a later `start`
or `discard` of it is answered with the reason (the last `ENDED_KEPT` are remembered).

`describe_stars` turns a planned constellation into the rows a person reviews (device,
tool, the command or path). Time comes from `now` (monotonic seconds), so a test moves it.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from agents.constellation import Constellation
from agents.constellation.fanout import fan_out_devices
from agents.constellation.model import DeviceSelector, Star
from app.control.messages import ProposedStar
from devices.registry import DeviceInfo

PROPOSAL_TTL: Final = 900.0
"""Seconds a proposal waits to be started before it expires (the fleet it was planned
for may have changed by then)."""
PROPOSALS_KEPT: Final = 32
"""Proposals held at once; a new one drops the oldest beyond this."""
ENDED_KEPT: Final = 256
"""Ended proposals whose end is remembered, to say why a late `start` is refused."""
WHAT_KEYS: Final = ("cmd", "code", "path", "url", "goal", "src", "dest")
"""The argument shown as what a star does, the first of these it has."""


class Ending(StrEnum):
    """How a proposal stopped waiting."""

    STARTED = "started"
    DISCARDED = "discarded"
    EXPIRED = "expired"
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class Held:
    """A waiting proposal."""

    id: str
    constellation: Constellation
    request: str
    made_at: float


@dataclass(frozen=True, slots=True)
class Ended:
    how: Ending
    why: str
    constellation_id: str


class ProposalGone(Exception):
    """`start` or `discard` named a proposal that does not wait (any more). `ending` is
    None for an id never made here; `message` says why and what to do."""

    def __init__(self, proposal_id: str, ending: Ended | None) -> None:
        why = ending.why if ending is not None else (
            "is not known here (it was never made on this server, or the server restarted "
            "since); propose the request again"
        )  # fmt: skip
        self.message = f"proposal {proposal_id!r} {why}"
        super().__init__(self.message)
        self.proposal_id = proposal_id
        self.ending = ending


class ProposalBook:
    """See the module docstring."""

    def __init__(
        self,
        *,
        ttl: float = PROPOSAL_TTL,
        limit: int = PROPOSALS_KEPT,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or ttl <= 0:
            raise ValueError("a proposal book holds at least one proposal for some time")
        self.ttl = ttl
        self.limit = limit
        self.now = now
        self._waiting: OrderedDict[str, Held] = OrderedDict()  # oldest first
        self._ended: OrderedDict[str, Ended] = OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, constellation: Constellation, request: str) -> Held:
        """Hold `constellation` (planned for `request`) under a new id. Call `sweep(room=1)`
        first: the book never holds more than `limit`."""
        held = Held(f"p-{uuid.uuid4().hex[:12]}", constellation, request, self.now())
        self._waiting[held.id] = held
        return held

    def waiting(self, proposal_id: str) -> Held:
        """The waiting proposal `proposal_id`; `ProposalGone` if it does not wait."""
        held = self._waiting.get(proposal_id)
        if held is None:
            raise ProposalGone(proposal_id, self._ended.get(proposal_id))
        return held

    def ending(self, proposal_id: str) -> Ended | None:
        """How proposal `proposal_id` ended, if it did (and is still remembered)."""
        return self._ended.get(proposal_id)

    def expires_in(self, held: Held) -> float:
        return max(0.0, held.made_at + self.ttl - self.now())

    def end(self, proposal_id: str, how: Ending, constellation_id: str = "") -> Held:
        """Take the waiting proposal `proposal_id` out (`ProposalGone` if it does not
        wait), remembering `how` it ended (`constellation_id`: the run it started)."""
        held = self.waiting(proposal_id)
        del self._waiting[proposal_id]
        self._remember(
            proposal_id, Ended(how, self._why(how, constellation_id), held.constellation.id)
        )
        return held

    def sweep(self, *, room: int = 0) -> list[Held]:
        """Drop the expired proposals, and the oldest while fewer than `room` places are
        free; the proposals dropped, oldest first."""
        dropped: list[Held] = []
        now = self.now()
        for held in list(self._waiting.values()):
            if now - held.made_at >= self.ttl:
                dropped.append(self.end(held.id, Ending.EXPIRED))
        while self._waiting and len(self._waiting) + room > self.limit:
            oldest = next(iter(self._waiting))
            dropped.append(self.end(oldest, Ending.DROPPED))
        return dropped

    def _remember(self, proposal_id: str, ended: Ended) -> None:
        self._ended[proposal_id] = ended
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    def _why(self, how: Ending, constellation_id: str) -> str:
        if how is Ending.STARTED:
            return (
                f"was started already: it runs as constellation {constellation_id!r} "
                "(follow it, or cancel it, by that id)"
            )
        if how is Ending.DISCARDED:
            return "was discarded; propose the request again to run it"
        if how is Ending.EXPIRED:
            return (
                f"expired: it waited more than {self.ttl:g}s without being started; propose "
                "the request again (the devices may have changed since)"
            )
        return (
            f"was dropped to make room: {self.limit} newer proposals were waiting; propose "
            "the request again"
        )


def describe_stars(
    constellation: Constellation, devices: Sequence[DeviceInfo]
) -> list[ProposedStar]:
    """Each star of a planned `constellation` as a person reviews it (see
    `app.control.messages.ProposedStar`); a star that fans out names the `devices` it
    would run on now."""
    rows = []
    for star in constellation.stars.values():
        args = star.effective_args
        what = next((args[key] for key in WHAT_KEYS if key in args), "")
        rows.append(
            ProposedStar(
                id=star.id,
                title=star.title,
                device=where(star, devices),
                tool=star.effective_tool,
                what=what if isinstance(what, str) else str(what),
                after=[line.source for line in constellation.incoming(star.id)],
            )
        )
    return rows


def where(star: Star, devices: Sequence[DeviceInfo]) -> str:
    """Where `star` would run, in words: a device's name, `each of a, b`, `any device`,
    or the kind of device its selector asks for."""
    on = star.on
    if on is None or on.is_any:
        return "any device"
    if on.each:
        names = fan_out_devices(star, devices)
        if names:
            return f"each of {', '.join(names)}"
        return f"each {_kind(on)} (none connected now)"
    if on.name:
        return on.name
    return f"any {_kind(on)}"


def _kind(on: DeviceSelector) -> str:
    parts = []
    if on.names:
        parts.append(f"of {', '.join(on.names)}")
    if on.platform:
        parts.append(f"on {on.platform}")
    if on.labels:
        parts.append(f"labelled {', '.join(on.labels)}")
    if on.gpu:
        parts.append("with a GPU")
    if on.min_vram_mb:
        parts.append(f"with {on.min_vram_mb} MiB of free VRAM")
    return " ".join(["device", *parts])


__all__ = [
    "ENDED_KEPT",
    "PROPOSALS_KEPT",
    "PROPOSAL_TTL",
    "Ended",
    "Ending",
    "Held",
    "ProposalBook",
    "ProposalGone",
    "describe_stars",
    "where",
]
