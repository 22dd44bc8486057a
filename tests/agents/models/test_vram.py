"""Free VRAM through NVML, with a stand-in `pynvml` module (no GPU needed)."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from agents.models.vram import read_free_vram


@dataclass
class _Memory:
    free: int


def fake_nvml(
    free: list[int], *, fail_init: bool = False, fail_query: bool = False
) -> tuple[types.ModuleType, list[str]]:
    """A `pynvml` with GPUs that have `free` bytes free; also returns the calls it saw."""
    calls: list[str] = []
    module = types.ModuleType("pynvml")

    def init() -> None:
        calls.append("init")
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def memory(handle: int) -> _Memory:
        if fail_query:
            raise RuntimeError("GPU is lost")
        return _Memory(free[handle])

    functions: dict[str, Callable[..., object]] = {
        "nvmlInit": init,
        "nvmlShutdown": lambda: calls.append("shutdown"),
        "nvmlDeviceGetCount": lambda: len(free),
        "nvmlDeviceGetHandleByIndex": lambda index: index,
        "nvmlDeviceGetMemoryInfo": memory,
    }
    for name, function in functions.items():
        setattr(module, name, function)
    return module, calls


def test_most_free_memory_over_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    module, calls = fake_nvml([3 << 30, 7 << 30, 5 << 30])
    monkeypatch.setitem(sys.modules, "pynvml", module)
    assert read_free_vram() == 7 << 30
    assert calls == ["init", "shutdown"]


def test_pynvml_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes the import fail
    assert read_free_vram() is None


def test_no_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    module, _ = fake_nvml([1 << 30], fail_init=True)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    assert read_free_vram() is None


def test_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    module, _ = fake_nvml([])
    monkeypatch.setitem(sys.modules, "pynvml", module)
    assert read_free_vram() is None


def test_failed_query_still_shuts_nvml_down(monkeypatch: pytest.MonkeyPatch) -> None:
    module, calls = fake_nvml([1 << 30], fail_query=True)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    assert read_free_vram() is None
    assert calls == ["init", "shutdown"]


def test_this_machine_never_raises() -> None:
    free = read_free_vram()
    assert free is None or free >= 0
