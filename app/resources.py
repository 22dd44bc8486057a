"""Locate the bundled resources (sample plans, prompts, styles) next to the packages."""

from __future__ import annotations

from pathlib import Path

RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def resources_dir() -> Path:
    if not RESOURCES.is_dir():
        raise FileNotFoundError(
            f"Orrery's resources folder is missing at {RESOURCES}; install Orrery from its "
            "source tree (`pip install -e .`) so the resources stay beside the packages"
        )
    return RESOURCES


def sample_plans() -> list[Path]:
    return sorted((resources_dir() / "plans").glob("*.yaml"))
