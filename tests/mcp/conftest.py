"""The MCP adapter under test: the real `agent-staking mcp` command, driven by the
official MCP SDK client, in front of the gRPC suite's real server (`service`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.api.conftest import SOL, Service, service, wallet

__all__ = ["SOL", "Service", "http_session", "service", "stdio_session", "wallet"]

REPO = Path(__file__).resolve().parents[2]


def command() -> list[str]:
    """The installed console script (what an MCP host runs), else the module."""
    script = Path(sys.executable).with_name("agent-staking")
    return [str(script)] if script.exists() else [sys.executable, "-m", "service"]


@asynccontextmanager
async def stdio_session(
    target: str, *args: str, api_key: str = "", env: dict[str, str] | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session with `agent-staking mcp` over stdio."""
    program, *rest = command()
    environment = {"AGENT_STAKING_API_KEY": api_key} if api_key else {}
    params = StdioServerParameters(
        command=program,
        args=[*rest, "mcp", "--target", target, *args],
        env={**environment, **(env or {})},
        cwd=REPO,
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def http_process(target: str, *args: str) -> AsyncIterator[str]:
    """`agent-staking mcp --http 127.0.0.1:0` with no key of its own; yields its URL."""
    env = {k: v for k, v in os.environ.items() if k != "AGENT_STAKING_API_KEY"}
    process = await asyncio.create_subprocess_exec(
        *command(),
        "mcp",
        "--target",
        target,
        "--http",
        "127.0.0.1:0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line, "agent-staking mcp --http exited before announcing its URL"
        announced = json.loads(line)
        assert announced["target"] == target
        yield str(announced["mcp"])
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    # SIGTERM drains and exits cleanly.
    assert code == 0, code


@asynccontextmanager
async def http_session(url: str, api_key: str) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session over streamable HTTP, sending its own key."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with (
        create_mcp_http_client(headers=headers) as client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session
