"""The orchestrator's artifact store: files devices upload, kept by content hash.

A device's `artifact.put` streams a file to the orchestrator, which verifies its size
and sha256 (`protocol.artifacts.ArtifactReceiver`) and keeps it as ``objects/<sha256>``
with its name beside it; another device's `artifact.get` fetches it by that hash. Keeping
files by hash makes an upload idempotent: the same content uploaded twice is one file.

Uploads are bounded three ways: one artifact by `max_size`, the bytes each device has
put in the store by `max_per_device`, all of them by `max_total` (`room_for` says why an
upload does not fit, `keep` raises `QuotaExceeded`). Each object's uploader is kept
beside it (``<sha256>.by``), so the count survives restarts. Everything is private to the
orchestrator's user (0700 folders, 0600 files).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from pathlib import Path

from protocol.artifacts import ArtifactReceiver
from protocol.private import private_dir, write_private

log = logging.getLogger("orrery.artifacts")

DEFAULT_MAX_ARTIFACT = 1 << 30  # 1 GiB
DEFAULT_MAX_PER_DEVICE = 4 << 30  # 4 GiB
DEFAULT_MAX_TOTAL = 16 << 30  # 16 GiB
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIB = 1 << 30


class QuotaExceeded(Exception):
    """Keeping an upload would exceed a quota; the message names it and the numbers."""


def _size(count: int) -> str:
    return f"{count / _GIB:.2f} GiB" if count >= _GIB else f"{count} bytes"


class ArtifactStore:
    """Artifacts under `root`: ``objects/<sha256>`` (with ``.name`` and ``.by``) and
    ``incoming/``; see the module docstring for the limits."""

    def __init__(
        self,
        root: Path,
        *,
        max_size: int = DEFAULT_MAX_ARTIFACT,
        max_per_device: int = DEFAULT_MAX_PER_DEVICE,
        max_total: int = DEFAULT_MAX_TOTAL,
    ) -> None:
        self.root = Path(root)
        self.max_size = max_size
        self.max_per_device = max_per_device
        self.max_total = max_total
        self._objects = self.root / "objects"
        self._incoming = self.root / "incoming"
        private_dir(self.root)  # uploads may hold anything: 0700 folders, 0600 files
        private_dir(self._objects)
        private_dir(self._incoming)
        self._total = 0
        self._by_device: dict[str, int] = {}
        for path in self._objects.iterdir():
            if _SHA256.match(path.name) and path.is_file():
                self._count(self._uploader(path.name), path.stat().st_size)

    @property
    def total(self) -> int:
        """Bytes kept, all devices together."""
        return self._total

    def used_by(self, device: str) -> int:
        """Bytes of the artifacts `device` was the first to upload."""
        return self._by_device.get(device, 0)

    def room_for(self, device: str, size: int) -> str | None:
        """Why an upload of `size` bytes from `device` would not fit; None if it would."""
        if self._total + size > self.max_total:
            return (
                f"the orchestrator's artifact store is full: {_size(self._total)} of "
                f"{_size(self.max_total)} kept, and this artifact has {_size(size)}; "
                "remove old artifacts (DATA_DIR/artifacts/objects) or raise the quota"
            )
        used = self.used_by(device)
        if used + size > self.max_per_device:
            return (
                f"device {device!r} has used its artifact quota: {_size(used)} of "
                f"{_size(self.max_per_device)} kept, and this artifact has {_size(size)}"
            )
        return None

    def receiver(self) -> ArtifactReceiver:
        """A receiver for one connection's uploads (its own folder under ``incoming/``)."""
        return ArtifactReceiver(self._incoming / uuid.uuid4().hex, max_size=self.max_size)

    def keep(self, received: Path, sha256: str, name: str, device: str = "") -> Path:
        """Move a verified upload (from `device`) into the store; returns where it is
        kept. Raises `QuotaExceeded` (the upload deleted) when it no longer fits."""
        target = self._objects / sha256
        if target.exists():
            received.unlink(missing_ok=True)  # the same content again: nothing more kept
        else:
            size = received.stat().st_size
            problem = self.room_for(device, size)
            if problem is not None:
                received.unlink(missing_ok=True)
                raise QuotaExceeded(problem)
            received.chmod(0o600)  # as the receiver makes it; whatever made it, kept private
            os.replace(received, target)
            write_private(self._objects / f"{sha256}.by", device.encode("utf-8"))
            self._count(device, size)
        write_private(self._objects / f"{sha256}.name", name.encode("utf-8"))
        log.info("artifact %s kept as %s (%d bytes)", name, sha256[:12], target.stat().st_size)
        return target

    def discard(self, receiver: ArtifactReceiver) -> None:
        """Drop a connection's receiver: its partial uploads and its folder."""
        receiver.close()
        shutil.rmtree(receiver.dest_dir, ignore_errors=True)

    def find(self, sha256: str) -> tuple[Path, str] | None:
        """(path, name) of a stored artifact, or None."""
        if not _SHA256.match(sha256):
            return None
        path = self._objects / sha256
        if not path.is_file():
            return None
        name_file = self._objects / f"{sha256}.name"
        name = name_file.read_text(encoding="utf-8") if name_file.is_file() else sha256
        return path, name

    def _uploader(self, sha256: str) -> str:
        try:
            return (self._objects / f"{sha256}.by").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return ""  # kept before uploaders were recorded: counts in the total only

    def _count(self, device: str, size: int) -> None:
        self._total += size
        self._by_device[device] = self._by_device.get(device, 0) + size
