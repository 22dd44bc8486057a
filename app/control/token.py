"""The control API's local token: DATA_DIR/control.token, made on first start, mode 0600.

Whoever can read the file may drive the orchestrator, as the data dir's owner can; a
client on the same machine reads it, a remote one is given it (`--token`).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Final

from protocol.private import private_dir

log = logging.getLogger("orrery.control.token")

TOKEN_FILE: Final = "control.token"
TOKEN_PREFIX: Final = "orc1_"
ENV_TOKEN: Final = "ORRERY_CONTROL_TOKEN"


class TokenError(Exception):
    """The token file is missing or unusable; the message names the file and what to do."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def ensure_token(data_dir: Path) -> str:
    """The server's token: read from the data dir, or created there (mode 0600) first.

    A file that others may read is tightened to 0600 (with a warning). Raises
    `TokenError` when the file cannot be created or read.
    """
    path = token_path(data_dir)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        private_dir(data_dir)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _tighten(path)
        return read_token(data_dir)
    except OSError as exc:
        raise TokenError(f"cannot create the control token {path}: {exc}", path) from exc
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(token + "\n")
    log.info("created the control token %s", path)
    return token


def read_token(data_dir: Path) -> str:
    """The token a client presents, from the server's data dir; `TokenError` if unusable."""
    path = token_path(data_dir)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise TokenError(
            f"no control token at {path}: start `orrery serve` with this data dir first, "
            f"or pass the server's token (--token or ${ENV_TOKEN})",
            path,
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot read the control token {path}: {exc}", path) from exc
    if not text:
        raise TokenError(f"the control token file {path} is empty; delete it and restart", path)
    return text


def tokens_match(presented: str, expected: str) -> bool:
    """Compare in constant time (for equal lengths), so timing tells nothing of the token."""
    return hmac.compare_digest(presented.encode(), expected.encode())


def _tighten(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("control token %s was mode %o; setting it to 0600", path, mode)
            path.chmod(0o600)
    except OSError as exc:
        raise TokenError(f"cannot check the control token {path}: {exc}", path) from exc
