"""`agent-staking mcp` over stdio, driven by the MCP SDK's own ClientSession."""

from __future__ import annotations

import pytest
from mcp import MCPError
from solders.keypair import Keypair

from ._flow import check_tools, errors_round_trip, stake, tool_error, watch_events
from .conftest import Service, stdio_session


async def test_an_agent_stakes_through_mcp_over_stdio(service: Service, wallet: Keypair) -> None:
    async with stdio_session(
        service.address, "--stream-window", "3", api_key=service.staking_secret
    ) as session:
        await check_tools(session)
        await stake(session, service, wallet)
        await watch_events(session, wallet)


async def test_errors_come_back_as_tool_errors(service: Service, wallet: Keypair) -> None:
    async with stdio_session(service.address, api_key=service.staking_secret) as session:
        await errors_round_trip(session, wallet)
        with pytest.raises(MCPError, match="unknown tool"):
            await session.call_tool("transfer_everything", {})


async def test_the_key_comes_from_the_named_variable(service: Service) -> None:
    async with stdio_session(
        service.address,
        "--api-key-env",
        "MY_STAKING_KEY",
        env={"MY_STAKING_KEY": service.staking_secret},
    ) as session:
        assert not (await session.call_tool("get_network_info", {})).is_error
    async with stdio_session(service.address) as session:
        error = tool_error(await session.call_tool("get_network_info", {}))
        assert error["code"] == "UNAUTHENTICATED"
