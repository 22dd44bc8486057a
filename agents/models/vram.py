"""Free GPU memory on this machine, from NVIDIA's NVML when it is available."""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)


def read_free_vram() -> int | None:
    """The most free memory on any one NVIDIA GPU, in bytes; None if that cannot be known.

    Uses `pynvml` (the ``nvidia-ml-py`` package) when it is installed and a driver and a GPU
    are present. Never raises: every failure is logged at debug level and gives None.
    """
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError:
        log.debug("pynvml is not installed: free VRAM unknown")
        return None
    try:
        nvml.nvmlInit()
    except Exception as exc:
        log.debug("NVML is unavailable (no NVIDIA driver?): %s", exc)
        return None
    try:
        free = [
            int(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index)).free)
            for index in range(int(nvml.nvmlDeviceGetCount()))
        ]
    except Exception as exc:
        log.debug("cannot read GPU memory through NVML: %s", exc)
        return None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception as exc:
            log.debug("nvmlShutdown failed: %s", exc)
    if not free:
        log.debug("NVML found no GPU")
        return None
    return max(free)
