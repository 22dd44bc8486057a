"""Private folders and files: what Orrery keeps for one user, no other local user may read.

Data dirs, the store, the outbox, tokens, artifacts and logs hold secrets (device keys,
task outputs), so every folder Orrery makes is created 0700 and every file 0600 from the
start -- `os.mkdir` and `os.open` with those modes, never a chmod after the fact, so no
other user can open one in between. A folder or file found with wider permissions (made
by an older version, or by hand) is tightened when Orrery opens it, with a warning that
names it. What cannot be tightened (another user's folder) is said, not fatal.

    data = private_dir(Path("~/.local/share/orrery").expanduser())
    with open_private(data / "device.log", "ab") as log_file: ...

Used by `app`, `agents` and `devices`; `memory` makes its database private itself (it
imports nothing of ours).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path
from typing import IO, Final, Literal

log = logging.getLogger("orrery.private")

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner can enter: created 0700 (with any missing parent,
    also 0700) if missing, tightened to 0700 (with a warning) if others may enter it.
    Returns `path`; raises `OSError` when it cannot be created."""
    missing: list[Path] = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            folder.mkdir(mode=DIR_MODE)
    tighten(path, DIR_MODE, follow=True)  # a data dir may be a link to where it lives
    return path


def tighten(path: Path, mode: int = FILE_MODE, *, follow: bool = False) -> bool:
    """Take group and other permissions away from `path` (when it exists), keeping at most
    `mode`; a warning names what was changed. Whether it was changed. A symbolic link is
    left alone unless `follow` (then what it points to is tightened)."""
    try:
        info = path.stat() if follow else path.lstat()
    except OSError:
        return False
    if stat.S_ISLNK(info.st_mode):
        return False
    current = stat.S_IMODE(info.st_mode)
    if not current & 0o077:
        return False
    wanted = current & mode
    try:
        path.chmod(wanted)
    except OSError as exc:
        log.warning(
            "%s is mode %o: other local users may read it, and it cannot be made private "
            "(%s); use a data dir of your own",
            path,
            current,
            exc.strerror or exc,
        )
        return False
    log.warning("%s was mode %o (other local users could read it); now %o", path, current, wanted)
    return True


def private_file(path: Path) -> Path:
    """Make sure `path` exists as a file only its owner can read: created empty 0600 if
    missing, else tightened (with a warning). Returns `path`."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, FILE_MODE)
    except FileExistsError:
        tighten(path)
    else:
        os.close(descriptor)
    return path


def open_private(path: Path, mode: Literal["ab", "wb"] = "wb") -> IO[bytes]:
    """Open `path` for writing (`ab` appends, `wb` replaces) as a 0600 file: created so,
    or tightened first if it was wider. A symbolic link at `path` is refused (`OSError`)."""
    flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | _CLOEXEC
    flags |= os.O_APPEND if mode == "ab" else os.O_TRUNC
    if path.exists():
        tighten(path)
    return os.fdopen(os.open(path, flags, FILE_MODE), mode)


def write_private(path: Path, data: bytes) -> None:
    """Replace `path`'s content with `data`, the file 0600 (see `open_private`)."""
    with open_private(path, "wb") as file:
        file.write(data)


def others_may_read(path: Path) -> bool:
    """Whether group or other users have any permission on `path` (False if it is gone)."""
    try:
        return bool(stat.S_IMODE(path.lstat().st_mode) & 0o077)
    except OSError:
        return False


__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "open_private",
    "others_may_read",
    "private_dir",
    "private_file",
    "tighten",
    "write_private",
]
