"""The orchestrator's artifact store: files devices upload, kept by content hash.

A device's `artifact.put` streams a file to the orchestrator, which verifies its size
and sha256 (`protocol.artifacts.ArtifactReceiver`) and keeps it as ``objects/<sha256>``
with its name beside it; another device's `artifact.get` fetches it by that hash. Keeping
files by hash makes an upload idempotent: the same content uploaded twice is one file.
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
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactStore:
    """Artifacts under `root`: ``objects/<sha256>``, ``objects/<sha256>.name``, ``incoming/``."""

    def __init__(self, root: Path, *, max_size: int = DEFAULT_MAX_ARTIFACT) -> None:
        self.root = Path(root)
        self.max_size = max_size
        self._objects = self.root / "objects"
        self._incoming = self.root / "incoming"
        private_dir(self.root)  # uploads may hold anything: 0700 folders, 0600 files
        private_dir(self._objects)
        private_dir(self._incoming)

    def receiver(self) -> ArtifactReceiver:
        """A receiver for one connection's uploads (its own folder under ``incoming/``)."""
        return ArtifactReceiver(self._incoming / uuid.uuid4().hex, max_size=self.max_size)

    def keep(self, received: Path, sha256: str, name: str) -> Path:
        """Move a verified upload into the store; returns where it is kept."""
        target = self._objects / sha256
        if target.exists():
            received.unlink(missing_ok=True)  # the same content again
        else:
            os.replace(received, target)
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
