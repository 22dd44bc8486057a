"""Where Orrery keeps its files: the data directory and what lives in it."""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "ORRERY_HOME"


def data_dir(explicit: str | Path | None = None) -> Path:
    """`--data-dir`, else `$ORRERY_HOME`, else the platform's user data directory."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser().resolve()
    from platformdirs import user_data_dir

    return Path(user_data_dir("orrery", appauthor=False))


def workspace_dir(data: Path, explicit: str | Path | None = None) -> Path:
    """The local device's workspace: tools read and write only below it."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    return data / "workspace"
