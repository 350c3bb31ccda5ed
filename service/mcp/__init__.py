"""The MCP adapter: StakingService and EventService RPCs as Model Context Protocol tools.

A gRPC client of our own API (`agent-staking mcp --target HOST:PORT`), over stdio
or streamable HTTP. It implements no staking logic: each tool is one RPC, described
and validated from the proto descriptors.
"""

from service.mcp._errors import INVALID_TOOL_ARGUMENTS, PRIVATE_KEY_REFUSED, ToolError
from service.mcp._schema import message_schema
from service.mcp._server import McpConfig, StakingMcp, open_channel, run_http, run_stdio
from service.mcp._tools import (
    EXPOSED,
    HIDDEN,
    SERVICE,
    SERVICES,
    Exposure,
    StakingTool,
    staking_tools,
    tool_name,
)

__all__ = [
    "EXPOSED",
    "HIDDEN",
    "INVALID_TOOL_ARGUMENTS",
    "PRIVATE_KEY_REFUSED",
    "SERVICE",
    "SERVICES",
    "Exposure",
    "McpConfig",
    "StakingMcp",
    "StakingTool",
    "ToolError",
    "message_schema",
    "open_channel",
    "run_http",
    "run_stdio",
    "staking_tools",
    "tool_name",
]
