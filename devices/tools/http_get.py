"""The `http.get` tool: fetch a URL the device's policy allows, with a bounded body.

Only URLs under a prefix in the policy's `[http] allow` are fetched (none by default).
Redirects are followed by hand, at most `MAX_REDIRECTS` of them, and each hop is checked
against the allow-list like the first URL. The stdlib's urllib does the work in a thread.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import http.client
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import IO, Any
from urllib.parse import urljoin

from pydantic import BaseModel, ConfigDict, Field

from devices.tools.base import Tool, ToolContext
from devices.tools.errors import ToolError, ToolFailed, ToolTimedOut, UrlNotAllowed
from devices.tools.process import truncation_marker

MAX_BODY_LIMIT = 8 * 1024 * 1024
MAX_REDIRECTS = 5
KEPT_HEADERS = (
    "content-type",
    "content-length",
    "content-encoding",
    "last-modified",
    "etag",
    "location",
    "retry-after",
)
_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = "orrery-device/0.1 (http.get)"


class HttpGetArgs(BaseModel):
    """GET a URL under one of the device policy's `[http] allow` prefixes."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=8192, description="an http:// or https:// URL")
    timeout: float = Field(
        default=10.0, gt=0, le=300, description="seconds for the whole fetch, redirects included"
    )
    max_bytes: int = Field(
        default=1_048_576,
        ge=1,
        le=MAX_BODY_LIMIT,
        description="bytes of the body kept; the rest is dropped with a marker",
    )
    check: bool = Field(default=True, description="fail the task when the status is 400 or more")


class HttpGetResult(BaseModel):
    """The final response (after redirects); `body` is decoded text, perhaps truncated."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="the URL of the final response")
    status: int
    reason: str
    headers: dict[str, str] = Field(description=f"those of {', '.join(KEPT_HEADERS)} it sent")
    body: str
    truncated: bool = Field(description="the body was longer than max_bytes")
    bytes: int = Field(description="bytes of the body received (at most max_bytes)")


@dataclass
class _Response:
    """One response as read by the worker thread."""

    url: str
    status: int
    reason: str
    headers: Message
    body: bytes
    truncated: bool


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Hands 3xx responses back as `HTTPError`s: the tool checks each hop itself."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        del args, kwargs
        return None


class _Stopped(Exception):
    """The tool stopped waiting (timeout or cancellation): the worker thread gives up."""


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_NoRedirects())


def _read_body(stream: IO[bytes], max_bytes: int, stop: threading.Event) -> tuple[bytes, bool]:
    body = bytearray()
    while len(body) <= max_bytes:
        if stop.is_set():
            raise _Stopped
        chunk = stream.read(min(_CHUNK, max_bytes + 1 - len(body)))
        if not chunk:
            break
        body += chunk
    return bytes(body[:max_bytes]), len(body) > max_bytes


def _fetch(url: str, timeout: float, max_bytes: int, stop: threading.Event) -> _Response:
    """GET `url` without following redirects; runs in a worker thread."""
    request = urllib.request.Request(
        url, headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}, method="GET"
    )
    try:
        response: Any = _opener().open(request, timeout=timeout)
    except urllib.error.HTTPError as error:  # 3xx, 4xx and 5xx: still a response
        response = error
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise TimeoutError from None
        raise ToolError(f"could not fetch {url!r}: {error.reason}") from None
    except (http.client.HTTPException, OSError) as error:
        raise ToolError(f"could not fetch {url!r}: {error}") from None
    with contextlib.closing(response):
        try:
            body, truncated = _read_body(response, max_bytes, stop)
        except (http.client.HTTPException, ConnectionError) as error:
            raise ToolError(f"the connection broke while reading {url!r}: {error}") from None
        status = int(response.status)
        return _Response(url, status, str(response.reason), response.headers, body, truncated)


def _decode(response: _Response, max_bytes: int) -> str:
    charset = response.headers.get_content_charset() or "utf-8"
    try:
        decoder = codecs.getincrementaldecoder(charset)("replace")
    except LookupError:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
    # a cut in the middle of a character is not shown as a broken one
    text = decoder.decode(response.body, final=not response.truncated)
    if not response.truncated:
        return text
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        return text + truncation_marker(int(length) - max_bytes)
    return text + f"\n[... truncated after {max_bytes} bytes ...]"


class HttpGetTool(Tool[HttpGetArgs, HttpGetResult]):
    name = "http.get"
    args_model = HttpGetArgs
    result_model = HttpGetResult

    async def run(self, args: HttpGetArgs, context: ToolContext) -> HttpGetResult:
        url = context.policy.http.check(args.url)
        stop = threading.Event()
        try:
            async with asyncio.timeout(args.timeout):
                response = await self._follow(url, args, context, stop)
        except TimeoutError:
            raise ToolTimedOut(args.timeout) from None
        finally:  # on timeout or cancellation the thread stops at its next chunk
            stop.set()
        kept = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
        result = HttpGetResult(
            url=response.url,
            status=response.status,
            reason=response.reason,
            headers=kept,
            body=_decode(response, args.max_bytes),
            truncated=response.truncated,
            bytes=len(response.body),
        )
        if args.check and response.status >= 400:
            raise ToolFailed(
                f"GET {response.url} answered {response.status} {response.reason}",
                output=result,
            )
        return result

    async def _follow(
        self, url: str, args: HttpGetArgs, context: ToolContext, stop: threading.Event
    ) -> _Response:
        for _ in range(MAX_REDIRECTS + 1):
            response = await asyncio.to_thread(_fetch, url, args.timeout, args.max_bytes, stop)
            location = response.headers.get("location")
            if response.status not in _REDIRECTS or not location:
                return response
            target = urljoin(url, location.strip())
            try:
                url = context.policy.http.check(target)
            except UrlNotAllowed as error:
                raise UrlNotAllowed(target, f"{url} redirected to it, but {error.why}") from None
            context.progress(f"redirected ({response.status}) to {url}", None)
        raise ToolError(
            f"{args.url!r} redirected more than {MAX_REDIRECTS} times; fetch the final URL"
        )
