"""The orchestrator's view of devices: what each offers and whether it fits a star."""

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
