"""Enrolment secrets and the challenge-response that proves a device holds one.

`orrery devices enroll NAME` creates a token. The orchestrator keeps only a salt and a
key derived from the token (PBKDF2-HMAC-SHA256); the device derives the same key from
its token and the salt sent in `challenge`, and answers with an HMAC of the nonce. The
token itself never crosses the wire and is never stored by the orchestrator.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "orr1_"
KDF_ITERATIONS = 100_000


@dataclass(frozen=True, slots=True)
class DeviceKey:
    """What the orchestrator stores for one enrolled device."""

    device: str
    salt: str  # hex
    key: str  # hex, PBKDF2(token, salt)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_nonce() -> str:
    return secrets.token_hex(32)


def derive_key(token: str, salt: str) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", token.encode(), bytes.fromhex(salt), KDF_ITERATIONS)


def enroll(device: str, token: str | None = None) -> tuple[str, DeviceKey]:
    """A new token for `device` and the key record to store for it."""
    token = token or new_token()
    salt = secrets.token_hex(16)
    return token, DeviceKey(device=device, salt=salt, key=derive_key(token, salt).hex())


def proof_mac(key: bytes, *, device: str, nonce: str, version: int) -> str:
    message = f"aip{version}|{device}|{nonce}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify_proof(record: DeviceKey, *, nonce: str, version: int, mac: str) -> bool:
    expected = proof_mac(
        bytes.fromhex(record.key), device=record.device, nonce=nonce, version=version
    )
    return hmac.compare_digest(expected, mac)
