"""What this host is and has: its platform name, memory, CPUs and load, read from the OS.

Memory comes from /proc/meminfo on Linux, else from `os.sysconf` where that answers; every
size here is in bytes. What a platform cannot tell is None. Free GPU memory is not read
here: reading it needs NVML, which `agents/` wraps, so `app/` passes a `VramProbe` in.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devices.registry import canonical_platform

MEMINFO = Path("/proc/meminfo")

VramProbe = Callable[[], int | None]
"""Free GPU memory in bytes (the most on any one GPU), or None where no GPU is known.
`app/` gives a device `agents.models.vram.read_free_vram`; the default is `no_gpu`."""


def no_gpu() -> int | None:
    """The `VramProbe` of a device that was told of no GPU."""
    return None


def platform_name(platform: str = sys.platform) -> str:
    """`sys.platform` as a device platform: "linux", "macos" or "windows" (else as it is,
    in lower case)."""
    return canonical_platform(platform)


def parse_meminfo(text: str) -> dict[str, int]:
    """The fields of a /proc/meminfo text: sizes ("kB") in bytes, counts as they are."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        number, *unit = value.split() or [""]
        if number.isdigit():
            fields[name.strip()] = int(number) * (1024 if unit == ["kB"] else 1)
    return fields


def meminfo(path: Path = MEMINFO) -> dict[str, int]:
    """/proc/meminfo (`parse_meminfo`), or {} where there is none."""
    try:
        return parse_meminfo(path.read_text(encoding="ascii", errors="replace"))
    except OSError:
        return {}


def _sysconf_bytes(pages: str) -> int | None:
    with contextlib.suppress(ValueError, OSError, AttributeError):
        size, count = os.sysconf("SC_PAGE_SIZE"), os.sysconf(pages)
        if size > 0 and count >= 0:
            return size * count
    return None


@dataclass(frozen=True)
class Memory:
    """Physical memory in bytes; `available` is what can be used without swapping."""

    total: int | None
    available: int | None

    @property
    def used_percent(self) -> float:
        """The share in use, 0-100 (0 when unknown)."""
        if not self.total or self.available is None:
            return 0.0
        return max(0.0, 100.0 * (self.total - self.available) / self.total)


def memory(path: Path = MEMINFO) -> Memory:
    """This host's memory: /proc/meminfo's MemTotal and MemAvailable, else `os.sysconf`."""
    info = meminfo(path)
    total = info.get("MemTotal")
    available = info.get("MemAvailable")
    return Memory(
        total=total if total is not None else _sysconf_bytes("SC_PHYS_PAGES"),
        available=available if available is not None else _sysconf_bytes("SC_AVPHYS_PAGES"),
    )


def cpu_count() -> int | None:
    """Logical CPUs, or None where the platform does not say."""
    return os.cpu_count()


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages, or None where there are none (Windows)."""
    with contextlib.suppress(OSError, AttributeError):
        return os.getloadavg()
    return None


def cpu_percent(cpus: int) -> float:
    """The one-minute load average as a share of `cpus`, 0-100+ (0 where unknown)."""
    load = load_average()
    return max(0.0, 100.0 * load[0] / max(1, cpus)) if load is not None else 0.0


__all__ = [
    "MEMINFO",
    "Memory",
    "VramProbe",
    "cpu_count",
    "cpu_percent",
    "load_average",
    "meminfo",
    "memory",
    "no_gpu",
    "parse_meminfo",
    "platform_name",
]
