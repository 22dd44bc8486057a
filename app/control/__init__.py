"""The control API: how scripts and the GUI drive `orrery serve` over a WebSocket.

`messages` is the wire format (normative spec: docs/control-api.md), `token` the local
token that authenticates a client, `server` the endpoint `Orchestra` serves at
/control/v1. The client is `app.client`. Importing this package loads `messages` and
`token` only (pydantic and the standard library), so clients stay light.
"""

from app.control.messages import CONTROL_PATH, PROTOCOL, ErrorCode
from app.control.token import TOKEN_FILE, TokenError, ensure_token, read_token

__all__ = [
    "CONTROL_PATH",
    "PROTOCOL",
    "TOKEN_FILE",
    "ErrorCode",
    "TokenError",
    "ensure_token",
    "read_token",
]
