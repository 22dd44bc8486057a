"""The orchestrator's view of devices: what each offers, whether it fits a star, how its
state changes, and the tool calls it asks a person about."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator

PLATFORM_ALIASES = {"darwin": "macos", "win32": "windows", "cygwin": "windows"}
"""Other names for the platforms AIP names `linux`, `macos` and `windows` (Python's
`sys.platform` values), read as those."""


def canonical_platform(name: str) -> str:
    """A platform as plans and AIP name it: "linux", "macos", "windows"; aliases such as
    "darwin" read as their name, and any other name in lower case ("freebsd14")."""
    lowered = name.strip().lower()
    if lowered.startswith("linux"):
        return "linux"
    return PLATFORM_ALIASES.get(lowered, lowered)


class DeviceInfo(BaseModel):
    """A device as the orchestrator sees it: identity, capabilities and concurrency limit.

    `platform` is kept canonical (`canonical_platform`): a device that announces "darwin"
    is a "macos" device, and a selector asking for either finds it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    platform: str = "linux"
    labels: frozenset[str] = frozenset()
    tools: frozenset[str] = frozenset()
    gpu: bool = False
    vram_free_mb: int = Field(default=0, ge=0)
    max_tasks: int = Field(default=4, ge=1, le=1024)

    @field_validator("platform")
    @classmethod
    def _canonical(cls, platform: str) -> str:
        return canonical_platform(platform)

    def mismatch(
        self,
        *,
        tool: str,
        name: str | None = None,
        labels: Iterable[str] = (),
        platform: str | None = None,
        gpu: bool | None = None,
        min_vram_mb: int | None = None,
    ) -> str | None:
        """Why this device cannot run such a star, or None when it can."""
        if name is not None and name != self.name:
            return f"is not {name!r}"
        if tool not in self.tools:
            return f"lacks tool {tool!r}"
        missing = sorted(set(labels) - self.labels)
        if missing:
            return f"lacks label(s) {', '.join(missing)}"
        if platform is not None and canonical_platform(platform) != self.platform:
            return f"runs {self.platform}, not {platform}"
        if gpu and not self.gpu:
            return "has no GPU"
        if min_vram_mb and self.vram_free_mb < min_vram_mb:
            return f"has {self.vram_free_mb} MB of free VRAM, not {min_vram_mb}"
        return None


class DeviceChange(BaseModel):
    """A device's state as the dispatcher that owns it saw it change.

    `state` is "online" (connected, a slot free), "busy" (every slot taken), "offline"
    (disconnected, may come back) or "lost" (gone: its attempts failed over). `joined`
    marks the change that brought a device in (with `info`); `left` the one that took it
    out (a goodbye, or lost). `running` is how many attempts it runs now.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str
    state: str
    info: DeviceInfo | None = None
    reason: str = ""
    running: int = 0
    joined: bool = False
    left: bool = False


class ApprovalAsked(BaseModel):
    """A tool call of one attempt that waits for a person's yes or no."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request: str
    constellation_id: str
    star_id: str
    attempt: int
    device: str
    tool: str
    summary: str


class UnknownApproval(LookupError):
    """No call waits under that request id (answered already, or its attempt ended)."""

    def __init__(self, request: str, pending: list[str]) -> None:
        listing = ", ".join(pending) or "none"
        super().__init__(f"no pending approval {request!r}; pending: {listing}")
        self.request = request
