"""Strict http(s) URL parsing for allow-lists: `parse_http_url` and the `HttpTarget` it gives.

Shared by `[http] allow` (`devices.tools.policy`) and `[mcp] allow_urls`
(`devices.tools.mcp_policy`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from urllib.parse import unquote, urlsplit

__all__ = ["HttpTarget", "parse_http_url"]


@dataclasses.dataclass(frozen=True)
class HttpTarget:
    """A parsed http(s) URL: what is compared with the allow-list, and what is fetched."""

    scheme: str
    host: str
    port: int
    path: str
    query: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = {"http": 80, "https": 443}[self.scheme]
        port = "" if self.port == default else f":{self.port}"
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{host}{port}{self.path}{query}"

    def under(self, prefix: HttpTarget) -> bool:
        """Same scheme, host and port, and a path at or below the prefix's path."""
        if (self.scheme, self.host, self.port) != (prefix.scheme, prefix.host, prefix.port):
            return False
        if prefix.path.endswith("/"):
            return self.path.startswith(prefix.path)
        return self.path == prefix.path or self.path.startswith(prefix.path + "/")


def _dot_segments(path: str) -> bool:
    """Whether `path` has '.' or '..' segments, also once percent-decoded (even twice)."""
    for _ in range(4):
        segments = re.split(r"[/\\]", path)
        if any(segment.split(";", 1)[0] in (".", "..") for segment in segments):
            return True
        decoded = unquote(path)
        if decoded == path:
            return False
        path = decoded
    return True  # still encoded after several rounds: refuse rather than guess


def parse_http_url(url: str, *, prefix: bool = False) -> HttpTarget:
    """Parse an http(s) URL strictly, or raise ValueError saying what is wrong with it.

    Refused: other schemes, user info (`http://allowed@evil/`), hosts that are not plain
    DNS names or IP addresses, bad ports (`http://host:80.evil/`), non-ASCII, spaces,
    control characters and backslashes, and '.'/'..' path segments (also encoded). A
    `prefix` (an allow-list entry) may have no query or fragment either.
    """
    if not url.isascii():
        raise ValueError("it has non-ASCII characters; percent-encode them")
    if any(ord(c) <= 32 or c in "\\\x7f" for c in url):
        raise ValueError("it has spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
    except ValueError as error:  # e.g. brackets around something that is not IPv6
        raise ValueError(f"it does not parse as a URL ({error})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        if not scheme or not parts.netloc:
            raise ValueError("it is not an absolute URL like 'https://host/path'")
        raise ValueError(f"only http and https URLs can be fetched, not {scheme}")
    if "@" in parts.netloc:
        raise ValueError("it has user info ('...@' before the host), which can disguise the host")
    host = parts.hostname or ""
    bracketed = parts.netloc.startswith("[")
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"its host {host!r} is not an IPv6 address") from None
    elif not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", host):
        raise ValueError(f"its host {host!r} is not a plain DNS name or IP address")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("its port is not a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("its port is not a number from 1 to 65535")
    path = parts.path or "/"
    if _dot_segments(path):
        raise ValueError("its path has '.' or '..' segments (perhaps percent-encoded)")
    if prefix and (parts.query or parts.fragment or url.endswith(("?", "#"))):
        raise ValueError("an allowed prefix has no query or fragment ('?' or '#')")
    default = 443 if scheme == "https" else 80
    return HttpTarget(scheme, host, port or default, path, parts.query)
