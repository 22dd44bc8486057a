"""http.get against a real HTTP server on 127.0.0.1: the allow-list, redirects and the body cap."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devices.local import LocalDispatcher
from devices.policy import DevicePolicy, HttpPolicy, apply_policy
from devices.tools import (
    HttpGetTool,
    InvalidToolArgs,
    ToolContext,
    ToolError,
    ToolFailed,
    ToolTimedOut,
    UrlNotAllowed,
    default_tools,
)
from devices.tools.http_get import MAX_REDIRECTS, HttpGetResult
from devices.tools.process import truncation_marker
from protocol.tasks import TaskAssignment, TaskOutcome

if TYPE_CHECKING:
    from conftest import FakeSink, ProgressLog

WAIT = 15.0
BIG = 3 * 1024 * 1024


class Handler(BaseHTTPRequestHandler):
    """Routes under /api/ (allowed in the tests) and /private/ (never allowed)."""

    server: Server

    def do_GET(self) -> None:
        self.server.seen.append(self.path)
        port = self.server.server_address[1]
        routes = {
            "/api/hello": (200, {"Content-Type": "text/plain; charset=utf-8"}, "hellö".encode()),
            "/api/latin": (200, {"Content-Type": "text/plain; charset=latin-1"}, b"caf\xe9"),
            "/api/big": (200, {"Content-Type": "text/plain"}, b"a" * BIG),
            "/api/missing": (404, {}, b"no such thing"),
            "/api/in": (302, {"Location": "/api/hello"}, b""),
            "/api/private": (302, {"Location": "/private/secret"}, b""),
            "/api/away": (301, {"Location": f"http://localhost:{port}/api/hello"}, b""),
            "/api/loop": (307, {"Location": "loop"}, b""),
            "/private/secret": (200, {}, b"secret"),
        }
        if self.path == "/api/slow":
            time.sleep(2)
        status, headers, body = routes.get(self.path, (404, {}, b""))
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except ConnectionError:  # the client gave up (the timeout test)
            pass

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"]:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def server() -> Iterator[Server]:
    local = Server()
    thread = threading.Thread(target=local.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield local
    local.shutdown()
    local.server_close()
    thread.join(WAIT)


@pytest.fixture
def allowed(context: ToolContext, server: Server) -> ToolContext:
    """The test context with a policy that allows the server's /api/ prefix."""
    policy = DevicePolicy(http=HttpPolicy(allow=(f"{server.base}/api/",)))
    return ToolContext(workspace=context.workspace, progress=context.progress, policy=policy)


async def get(context: ToolContext, **args: Any) -> HttpGetResult:
    tool = HttpGetTool()
    return await asyncio.wait_for(tool.run(tool.parse_args(args), context), WAIT)


async def test_allowed_fetch(allowed: ToolContext, server: Server) -> None:
    result = await get(allowed, url=f"{server.base}/api/hello")
    assert result.url == f"{server.base}/api/hello"
    assert (result.status, result.reason) == (200, "OK")
    assert result.body == "hellö"
    assert result.bytes == len("hellö".encode())
    assert result.truncated is False
    assert result.headers == {"content-type": "text/plain; charset=utf-8", "content-length": "6"}
    assert server.seen == ["/api/hello"]


async def test_charset_is_honoured(allowed: ToolContext, server: Server) -> None:
    assert (await get(allowed, url=f"{server.base}/api/latin")).body == "café"


async def test_the_default_policy_allows_nothing(context: ToolContext, server: Server) -> None:
    with pytest.raises(UrlNotAllowed) as caught:
        await get(context, url=f"{server.base}/api/hello")
    assert caught.value.message == (
        f"URL '{server.base}/api/hello' is not allowed on this device: no URL is allowed "
        "([http] allow is empty); add a prefix for it under [http] allow in its policy "
        '(e.g. "https://host/path/")'
    )
    assert server.seen == []


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://localhost:{port}/api/hello", "under none of [http] allow"),  # another host name
        ("http://127.0.0.1:{other}/api/hello", "under none of"),  # another port
        ("https://127.0.0.1:{port}/api/hello", "under none of"),  # another scheme
        ("http://127.0.0.1:{port}/private/secret", "under none of"),
        ("http://127.0.0.1:{port}/apiary", "under none of"),
        ("http://127.0.0.1:{port}/api", "under none of"),
        ("http://127.0.0.1:{port}@evil.invalid/api/hello", "user info"),
        ("http://u:p@127.0.0.1:{port}/api/hello", "user info"),
        ("http://127.0.0.1:{port}.evil.invalid/api/hello", "port is not a number"),
        ("http://evil.invalid#@127.0.0.1:{port}/api/hello", "under none of"),
        ("http://evil.invalid?@127.0.0.1:{port}/api/hello", "under none of"),
        ("http://127.0.0.1:{port}\\@evil.invalid/api/hello", "backslashes"),
        ("http://127.0.0.1:{port}/api/../private/secret", "'.' or '..' segments"),
        ("http://127.0.0.1:{port}/api/%2e%2e/private/secret", "'.' or '..' segments"),
        ("http://127.0.0.1:{port}/api/..%2Fprivate/secret", "'.' or '..' segments"),
        ("http://127.0.0.1:{port}/api/%252e%252e/private/secret", "'.' or '..' segments"),
        ("http://127.0.0.1:{port}/api/..;/private/secret", "'.' or '..' segments"),
        ("http://127.0.0.1:{port}/api/ hello", "spaces"),
        ("http://127.0.0.1:{port}/api/héllo", "non-ASCII"),
        ("http://0x7f.0.0.1:{port}/api/hello", "under none of"),
        ("http://2130706433:{port}/api/hello", "under none of"),
        ("http://[::1]:{port}/api/hello", "under none of"),
        ("http://[nothing]:{port}/api/hello", "does not parse as a URL"),
        ("http://127.0.0.1:0/api/hello", "port is not a number"),
        ("http://127.0.0.1:99999/api/hello", "port is not a number"),
        ("http://under_score:{port}/api/", "not a plain DNS name"),
        ("file:///etc/passwd", "not an absolute URL"),
        ("ftp://127.0.0.1:{port}/api/hello", "only http and https"),
        ("//127.0.0.1:{port}/api/hello", "not an absolute URL"),
        ("/api/hello", "not an absolute URL"),
    ],
)
async def test_tricky_urls_are_refused_before_any_request(
    allowed: ToolContext, server: Server, url: str, why: str
) -> None:
    port = server.server_address[1]
    url = url.format(port=port, other=port + 1 if port < 65535 else port - 1)
    with pytest.raises(UrlNotAllowed) as caught:
        await get(allowed, url=url)
    assert why in caught.value.message
    assert caught.value.url == url
    assert server.seen == []


async def test_scheme_and_host_case_do_not_matter(allowed: ToolContext, server: Server) -> None:
    url = f"HTTP://127.0.0.1:{server.server_address[1]}/api/hello#part"
    result = await get(allowed, url=url)
    assert result.url == f"{server.base}/api/hello"
    assert server.seen == ["/api/hello"]


async def test_an_allowed_redirect_is_followed(
    allowed: ToolContext, server: Server, progress: ProgressLog
) -> None:
    result = await get(allowed, url=f"{server.base}/api/in")
    assert (result.url, result.status, result.body) == (f"{server.base}/api/hello", 200, "hellö")
    assert server.seen == ["/api/in", "/api/hello"]
    assert (f"redirected (302) to {server.base}/api/hello", None) in progress.items


@pytest.mark.parametrize(
    ("path", "target"), [("/api/private", "/private/secret"), ("/api/away", "LOCALHOST")]
)
async def test_a_redirect_outside_the_allow_list_is_refused(
    allowed: ToolContext, server: Server, path: str, target: str
) -> None:
    port = server.server_address[1]
    target = f"http://localhost:{port}/api/hello" if target == "LOCALHOST" else server.base + target
    with pytest.raises(UrlNotAllowed) as caught:
        await get(allowed, url=server.base + path)
    assert caught.value.url == target
    assert caught.value.message.startswith(
        f"URL {target!r} is not allowed on this device: {server.base}{path} redirected to it, "
        "but it is under none of [http] allow"
    )
    assert server.seen == [path]


async def test_redirect_loops_end(allowed: ToolContext, server: Server) -> None:
    with pytest.raises(ToolError, match=f"redirected more than {MAX_REDIRECTS} times"):
        await get(allowed, url=f"{server.base}/api/loop")
    assert server.seen == ["/api/loop"] * (MAX_REDIRECTS + 1)


async def test_error_statuses_fail_unless_check_is_off(
    allowed: ToolContext, server: Server
) -> None:
    with pytest.raises(ToolFailed) as caught:
        await get(allowed, url=f"{server.base}/api/missing")
    assert caught.value.message == f"GET {server.base}/api/missing answered 404 Not Found"
    assert isinstance(caught.value.output, HttpGetResult)
    assert caught.value.output.body == "no such thing"
    result = await get(allowed, url=f"{server.base}/api/missing", check=False)
    assert (result.status, result.body) == (404, "no such thing")


async def test_the_body_is_capped_with_a_marker(allowed: ToolContext, server: Server) -> None:
    result = await get(allowed, url=f"{server.base}/api/big", max_bytes=1000)
    assert result.truncated is True
    assert result.bytes == 1000
    assert result.body == "a" * 1000 + truncation_marker(BIG - 1000)
    whole = await get(allowed, url=f"{server.base}/api/big", max_bytes=BIG)
    assert (whole.truncated, whole.bytes, len(whole.body)) == (False, BIG, BIG)


def test_limits_are_validated() -> None:
    tool = HttpGetTool()
    assert tool.parse_args({"url": "http://x/"}).max_bytes == 1024 * 1024
    assert tool.parse_args({"url": "http://x/"}).timeout == 10
    with pytest.raises(InvalidToolArgs, match="max_bytes"):
        tool.parse_args({"url": "http://x/", "max_bytes": 8 * 1024 * 1024 + 1})
    with pytest.raises(InvalidToolArgs, match="timeout"):
        tool.parse_args({"url": "http://x/", "timeout": 0})


async def test_a_slow_server_times_out(allowed: ToolContext, server: Server) -> None:
    started = time.monotonic()
    with pytest.raises(ToolTimedOut, match=r"timed out after 0\.3s"):
        await get(allowed, url=f"{server.base}/api/slow", timeout=0.3)
    assert time.monotonic() - started < 1.5


async def test_a_refused_connection_is_a_tool_error(allowed: ToolContext, server: Server) -> None:
    base = server.base
    server.shutdown()
    server.server_close()
    with pytest.raises(ToolError, match=f"could not fetch '{base}/api/hello'"):
        await get(allowed, url=f"{base}/api/hello")


async def test_through_the_dispatcher_with_a_policy_file(
    tmp_path: Path, workspace: Path, sink: FakeSink, server: Server
) -> None:
    path = tmp_path / "device.toml"
    path.write_text(f'[http]\nallow = ["{server.base}/api/hello"]\n')
    local = LocalDispatcher(workspace, tools=apply_policy(DevicePolicy.load(path), default_tools()))
    local.attach(sink)
    try:
        for star, url in [("ok", "/api/hello"), ("no", "/api/latin")]:
            local.assign(
                TaskAssignment(
                    constellation_id="c1",
                    star_id=star,
                    attempt=1,
                    device="local",
                    tool="http.get",
                    args={"url": server.base + url},
                )
            )
        ok = await sink.result("ok")
        assert ok.status is TaskOutcome.SUCCEEDED
        assert ok.output["body"] == "hellö"
        refused = await sink.result("no")
        assert refused.status is TaskOutcome.FAILED
        assert refused.error is not None
        assert "is under none of [http] allow" in refused.error
    finally:
        await local.aclose()
    assert server.seen == ["/api/hello"]
