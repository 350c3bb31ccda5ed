"""The MCP server: StakingService RPCs as MCP tools, over stdio or streamable HTTP.

A thin adapter and a gRPC client of our own API: arguments are validated against
the tool's schema, parsed into the request message, sent to the service with the
API key, and the answer comes back as proto JSON (`structuredContent`) plus a short
summary. It holds no key of any wallet and offers no tool that takes one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import mcp.types as mcp_types
import uvicorn
from agentstaking.v1 import events_pb2_grpc, staking_pb2_grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from jsonschema import Draft202012Validator
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from service.mcp._errors import (
    from_rpc_error,
    from_schema_errors,
    private_key_refused,
    unparsable,
)
from service.mcp._guard import private_key_paths
from service.mcp._summary import summarize, summarize_stream
from service.mcp._tools import StakingTool, instructions, staking_tools
from service.mcp._values import value_problems

log = logging.getLogger(__name__)

USER_AGENT = "agent-staking-mcp"


@dataclass(frozen=True, kw_only=True)
class McpConfig:
    """How the adapter reaches the service."""

    target: str
    """gRPC address of agent-staking, HOST:PORT."""
    api_key: str = ""
    """API key sent with every call (`authorization: Bearer ...`); over HTTP a
    client's own `Authorization: Bearer` (or `x-api-key`) header takes its place."""
    tls_ca: bytes | None = None
    """PEM of the CA that signed the service's certificate: TLS when set."""
    call_timeout: float = 60.0
    """Deadline of one unary call (SubmitTransaction may wait for a commitment)."""
    stream_window: float = 30.0
    """How long a streaming tool collects messages before it answers with what it has."""


def open_channel(config: McpConfig) -> grpc.aio.Channel:
    """A channel to the service: TLS with `tls_ca` when set, else plaintext."""
    options = [("grpc.primary_user_agent", USER_AGENT)]
    if config.tls_ca is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=config.tls_ca)
        return grpc.aio.secure_channel(config.target, credentials, options=options)
    return grpc.aio.insecure_channel(config.target, options=options)


class StakingMcp:
    """The tools and what calling one does; `server()` wraps them in an MCP server."""

    def __init__(self, config: McpConfig, channel: grpc.aio.Channel) -> None:
        self.config = config
        # One stub per service, by its full name.
        self._stubs: dict[str, Any] = {
            "agentstaking.v1.StakingService": staking_pb2_grpc.StakingServiceStub(channel),
            "agentstaking.v1.EventService": events_pb2_grpc.EventServiceStub(channel),
        }
        self.tools = staking_tools()
        self._validators = {
            name: Draft202012Validator(tool.input_schema) for name, tool in self.tools.items()
        }

    def list_tools(self) -> list[mcp_types.Tool]:
        return [tool.definition() for tool in self.tools.values()]

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any] | None, api_key: str = ""
    ) -> mcp_types.CallToolResult:
        """Call the tool's RPC; a failure is a tool error result, never an exception.

        Raises:
            MCPError: no tool of that name (a protocol error, as MCP asks).
        """
        tool = self.tools.get(name)
        if tool is None:
            raise MCPError(
                code=mcp_types.INVALID_PARAMS,
                message=f"unknown tool {name!r}; the tools are {', '.join(self.tools)}",
            )
        args = dict(arguments or {})
        secrets = list(private_key_paths(args))
        if secrets:
            return private_key_refused(secrets).result(name)
        errors = list(self._validators[name].iter_errors(args))
        problems = list(value_problems(args, tool.method.input_type))
        if errors or problems:
            return from_schema_errors(errors, problems).result(name)
        try:
            request = json_format.ParseDict(args, tool.request_class())
        except json_format.ParseError:
            # Its text can quote the value given: answer without it.
            return unparsable(f"an argument of {name} is not valid proto JSON").result(name)
        key = api_key or self.config.api_key
        metadata = (("authorization", f"Bearer {key}"),) if key else ()
        try:
            if tool.streaming:
                return await self._collect(tool, request, metadata)
            response = await self._rpc(tool)(
                request, metadata=metadata, timeout=self.config.call_timeout
            )
        except grpc.aio.AioRpcError as error:
            return from_rpc_error(error).result(name)
        return _result(summarize(tool.method.name, response), _json(response))

    def _rpc(self, tool: StakingTool) -> Callable[..., Any]:
        stub = self._stubs[tool.method.containing_service.full_name]
        rpc: Callable[..., Any] = getattr(stub, tool.method.name)
        return rpc

    async def _collect(
        self, tool: StakingTool, request: Message, metadata: tuple[tuple[str, str], ...]
    ) -> mcp_types.CallToolResult:
        """A server stream's messages until it ends or `stream_window` passes."""
        messages: list[Message] = []
        complete = False
        call = self._rpc(tool)(request, metadata=metadata)
        try:
            async with asyncio.timeout(self.config.stream_window):
                async for message in call:
                    messages.append(message)
            complete = True
        except TimeoutError:
            call.cancel()
        except grpc.aio.AioRpcError as error:
            if not messages:
                raise
            # Report what arrived with the failure, so nothing seen is lost.
            failure = from_rpc_error(error)
            log.info("%s ended with %s after %d messages", tool.name, failure.code, len(messages))
        body = {"messages": [_json(m) for m in messages], "complete": complete}
        return _result(summarize_stream(tool.method.name, messages, complete), body)

    def server(self) -> Server[Any]:
        """An MCP server (low-level SDK) offering the tools."""

        async def on_list_tools(
            ctx: Any, params: mcp_types.PaginatedRequestParams | None
        ) -> mcp_types.ListToolsResult:
            return mcp_types.ListToolsResult(tools=self.list_tools())

        async def on_call_tool(
            ctx: Any, params: mcp_types.CallToolRequestParams
        ) -> mcp_types.CallToolResult:
            return await self.call_tool(params.name, params.arguments, _caller_key(ctx))

        return Server(
            "agent-staking",
            version=_version(),
            title="agent-staking",
            description="Non-custodial Solana staking transactions for AI agents",
            instructions=instructions(),
            on_list_tools=on_list_tools,
            on_call_tool=on_call_tool,
        )


def _caller_key(ctx: Any) -> str:
    """The API key an HTTP client sent with its MCP request, if any."""
    headers = getattr(getattr(ctx, "request", None), "headers", None)
    if headers is None:
        return ""
    bearer: str = headers.get("authorization", "")
    scheme, _, token = bearer.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    api_key: str = headers.get("x-api-key", "")
    return api_key.strip()


def _json(message: Message) -> dict[str, Any]:
    body: dict[str, Any] = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return body


def _result(summary: str, body: dict[str, Any]) -> mcp_types.CallToolResult:
    # The JSON as text too, for hosts that show the model only `content`.
    return mcp_types.CallToolResult(
        content=[
            mcp_types.TextContent(text=summary),
            mcp_types.TextContent(text=json.dumps(body)),
        ],
        structured_content=body,
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("agent-staking")
    except PackageNotFoundError:
        return "0"


@asynccontextmanager
async def _adapter(config: McpConfig) -> AsyncIterator[StakingMcp]:
    channel = open_channel(config)
    try:
        yield StakingMcp(config, channel)
    finally:
        await channel.close()


async def run_stdio(config: McpConfig) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin."""
    async with _adapter(config) as adapter:
        server = adapter.server()
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers: the caller decides when it stops."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_http(
    config: McpConfig,
    host: str,
    port: int,
    *,
    announce: Callable[[str], None],
    stop: Awaitable[None],
) -> None:
    """Serve MCP over streamable HTTP at `http://HOST:PORT/mcp` until `stop` completes.

    `announce` gets the URL once the port is bound (port 0 picks a free one).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
        await _serve_http(config, sock, announce, stop)


async def _serve_http(
    config: McpConfig,
    sock: socket.socket,
    announce: Callable[[str], None],
    stop: Awaitable[None],
) -> None:
    host, bound = sock.getsockname()[:2]
    async with _adapter(config) as adapter:
        app = adapter.server().streamable_http_app(host=host)
        server = _Uvicorn(uvicorn.Config(app, log_level="warning", lifespan="on"))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        # The socket listens already: clients that connect now wait in its backlog.
        shown = f"[{host}]" if ":" in host else host
        announce(f"http://{shown}:{bound}/mcp")
        waiter = asyncio.ensure_future(stop)
        await asyncio.wait({serving, waiter}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
        waiter.cancel()
