"""The errors every Orrery client raises, in-process runtime and remote client alike.

    OrreryError                 base
    ├── BadServerUrl            `--server`/the URL given is not ws(s)://HOST:PORT (a ValueError)
    ├── ServerUnreachable       no connection to the server at `url` (`cause` says why)
    │   └── ConnectionLost      it dropped and could not be made again in time
    ├── AuthRefused             no control token, or the server refused it (names the file)
    └── RequestRejected         the request was refused: `code` (an `ErrorCode` value),
        │                       `reason`, and `field`, the request field at fault
        └── RunInterrupted      the orchestrator running the constellation stopped first

`RequestRejected.code` tells callers what to do: `invalid_plan` (fix the plan: the
reason is `file:line:col: what`), `plan_rejected`/`no_planner` (rephrase, or send a
plan), `no_capable_device` (connect a device that can), `unknown_constellation`,
`unknown_star`, `unknown_approval`, `not_retryable`, `unknown_proposal` (propose the
request again, or follow the constellation it started), `malformed`, `internal` (a bug).
"""

from __future__ import annotations

from app.control.messages import ErrorCode, ErrorReply


class OrreryError(Exception):
    """Base of the client errors."""


class BadServerUrl(OrreryError, ValueError):
    """The server URL cannot be used; the message says what form it must take."""


class ServerUnreachable(OrreryError):
    """No connection to the server at `url`; `cause` says why. Is `orrery serve` running
    there, and is the URL (host, port, ws:// or wss://) right?"""

    def __init__(self, url: str, cause: BaseException | str) -> None:
        detail = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"cannot reach the Orrery server at {url}: {detail}")
        self.url = url
        self.cause = cause


class ConnectionLost(ServerUnreachable):
    """The connection dropped and could not be made again within the time allowed."""


class AuthRefused(OrreryError):
    """The server refused the token (or there is none to present); the message says which."""


class RequestRejected(OrreryError):
    """The server refused a request: `code` (an `ErrorCode` value), `reason`, and `field`,
    the request field at fault when one is (`plan`, `constellation`, ...)."""

    def __init__(self, code: str, reason: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.field = field

    @classmethod
    def of(cls, code: ErrorCode, reason: str, field: str | None = None) -> RequestRejected:
        kind = RunInterrupted if code is ErrorCode.INTERRUPTED else RequestRejected
        return kind(code.value, reason, field)

    @classmethod
    def from_reply(cls, reply: ErrorReply) -> RequestRejected:
        return cls.of(reply.code, reply.message, reply.field)

    def reply(self, request_id: str | None) -> ErrorReply:
        """This refusal as the control API's `error` answer to request `request_id`."""
        return ErrorReply(
            id=request_id, code=ErrorCode(self.code), message=self.reason, field=self.field
        )


class RunInterrupted(RequestRejected):
    """The orchestrator that ran the constellation stopped before it finished."""


__all__ = [
    "AuthRefused",
    "BadServerUrl",
    "ConnectionLost",
    "OrreryError",
    "RequestRejected",
    "RunInterrupted",
    "ServerUnreachable",
]
