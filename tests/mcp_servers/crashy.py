"""A tiny MCP server for the tests, written with the SDK's MCPServer (FastMCP in mcp 1.x).

Run by path: `python crashy.py PID_FILE [--http PORT]`. It writes its process id to
PID_FILE at start (so a test can see whether it still runs), serves MCP on stdio (or on
streamable HTTP at http://127.0.0.1:PORT/mcp with `--http`), and offers:

- `echo(text)`: gives `text` back;
- `crash(code)`: exits the process in the middle of the call, without answering;
- `big(chars)`: a text of `chars` characters;
- `fail(why)`: raises, which MCP reports as an error result;
- `configure(settings)`: takes a required object, which a planner's grammar cannot give.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mcp.server import MCPServer

app = MCPServer("crashy")


@app.tool()
def echo(text: str) -> str:
    """Give the text back."""
    return text


@app.tool()
def crash(code: int = 3) -> str:
    """Exit the server process in the middle of this call."""
    sys.stdout.flush()
    os._exit(code)


@app.tool()
def big(chars: int) -> str:
    """A text of `chars` characters."""
    return "x" * chars


@app.tool()
def fail(why: str) -> str:
    """Fail with `why`."""
    raise RuntimeError(why)


@app.tool()
def configure(settings: dict[str, int]) -> int:
    """Take settings (an object argument)."""
    return len(settings)


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(str(os.getpid()))
    if sys.argv[2:3] == ["--http"]:
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[3]))
    else:
        app.run()
