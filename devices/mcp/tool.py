"""`mcp_tool`: one tool of an MCP server as a device `Tool` named `mcp.<server>.<tool>`.

Arguments are checked against the tool's own input JSON schema before the call (a bad
call fails as `InvalidToolArgs`, never reaching the server). The result is bounded: the
text blocks joined and cut at the server's `max_output_chars` (marked `truncated`), the
structured content kept when its JSON fits in the same bound, other blocks (images,
resources) only counted. The planner sees of it what it sees of any output
(`agents.planner.summary`): field names, sizes and flags, never the text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import jsonschema
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, ConfigDict, Field

from devices.mcp.server import McpServer, McpToolSpec
from devices.tools.base import Tool, ToolContext
from devices.tools.errors import InvalidToolArgs, ToolFailed, ToolTimedOut
from devices.tools.mcp_policy import McpServerPolicy

__all__ = ["McpArgs", "McpResult", "McpTool", "mcp_tool", "schema_problem"]

_ERROR_CHARS = 500
_DESCRIPTION_CHARS = 300


class McpArgs(BaseModel):
    """An MCP tool's arguments: whatever its input schema allows (checked with it)."""

    model_config = ConfigDict(extra="allow", frozen=True)


class McpResult(BaseModel):
    """What one MCP tool call gave, bounded."""

    server: str
    tool: str
    text: str = Field(default="", description="the text blocks, joined by newlines, cut")
    text_chars: int = Field(default=0, description="how long the text was before any cut")
    structured: dict[str, Any] | None = Field(
        default=None, description="the structured content, when its JSON fits the bound"
    )
    other_blocks: int = Field(default=0, description="non-text blocks (images, resources)")
    truncated: bool = Field(default=False, description="whether anything was cut or dropped")


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """Why `schema` cannot check arguments (not a JSON schema of an object), or None."""
    try:
        jsonschema.validators.validator_for(schema).check_schema(dict(schema))
    except jsonschema.SchemaError as error:
        return f"its input schema is not a valid JSON schema: {error.message}"
    if schema.get("type", "object") != "object":
        return f"its input schema is of type {schema.get('type')!r}, not an object"
    return None


class McpTool(Tool[McpArgs, McpResult]):
    """Calls `spec.name` on `server`; made by `mcp_tool` (which gives it its name)."""

    args_model = McpArgs
    result_model = McpResult

    def __init__(self, server: McpServer, spec: McpToolSpec) -> None:
        self.server = server
        self.spec = spec
        validator_class = jsonschema.validators.validator_for(spec.input_schema)
        self._validator = validator_class(spec.input_schema)

    def parse_args(self, raw: Mapping[str, Any]) -> McpArgs:
        errors = sorted(self._validator.iter_errors(dict(raw)), key=lambda e: list(e.path))
        if errors:
            fields = tuple(".".join(map(str, e.path)) or "(arguments)" for e in errors[:5])
            shown = zip(fields, errors, strict=False)
            problems = "; ".join(f"{field}: {error.message[:200]}" for field, error in shown)
            raise InvalidToolArgs(
                f"invalid arguments for {self.name}: {problems}; fix them to match the "
                "tool's JSON schema",
                tool=self.name,
                fields=fields,
            )
        return McpArgs.model_validate(dict(raw))

    def json_schema(self) -> dict[str, Any]:
        schema = dict(self.spec.input_schema)
        first = self.spec.description.splitlines()[0] if self.spec.description else ""
        schema["description"] = first[:_DESCRIPTION_CHARS] or f"MCP tool {self.spec.name}"
        return schema

    async def run(self, args: McpArgs, context: ToolContext) -> McpResult:
        timeout = self.server.config.call_timeout
        context.progress(f"calling {self.spec.name} on MCP server {self.server.name}", None)
        try:
            async with asyncio.timeout(timeout):
                result = await self.server.call(self.spec.name, args.model_dump(mode="json"))
        except TimeoutError:
            raise ToolTimedOut(timeout) from None
        output = bounded(self.server.name, self.spec.name, result, self.server.config)
        if result.is_error:
            said = output.text[:_ERROR_CHARS].replace("\n", " ").strip() or "no message"
            raise ToolFailed(f"{self.name} reported an error: {said}", output=output)
        return output


def bounded(server: str, tool: str, result: CallToolResult, config: McpServerPolicy) -> McpResult:
    """`result` cut to `config.max_output_chars` characters of text and of structured JSON."""
    limit = config.max_output_chars
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    text = "\n".join(texts)
    truncated = len(text) > limit
    structured = result.structured_content
    if structured is not None and len(json.dumps(structured, default=str)) > limit:
        structured, truncated = None, True
    return McpResult(
        server=server,
        tool=tool,
        text=text[:limit],
        text_chars=len(text),
        structured=structured,
        other_blocks=len(result.content) - len(texts),
        truncated=truncated,
    )


def mcp_tool(server: McpServer, spec: McpToolSpec) -> McpTool:
    """The device tool `mcp.<server>.<tool>` for `spec` (a class per tool: names are
    class attributes)."""
    tool_name = spec.device_name

    class Named(McpTool):
        name = tool_name

    Named.__name__ = Named.__qualname__ = f"McpTool[{tool_name}]"
    return Named(server, spec)
