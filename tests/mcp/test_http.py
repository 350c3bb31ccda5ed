"""`agent-staking mcp --http`: streamable HTTP, each client sending its own API key."""

from __future__ import annotations

import httpx2
from solders.keypair import Keypair

from ._flow import check_tools, errors_round_trip, stake, tool_error
from .conftest import Service, http_process, http_session


async def test_an_agent_stakes_through_mcp_over_http(service: Service, wallet: Keypair) -> None:
    async with http_process(service.address) as url:
        async with http_session(url, service.staking_secret) as session:
            await check_tools(session)
            await stake(session, service, wallet)
            await errors_round_trip(session, wallet)
        # The adapter holds no key of its own: a client without one is refused by
        # the service, with the status it gave.
        async with http_session(url, "") as session:
            error = tool_error(await session.call_tool("get_network_info", {}))
            assert error["code"] == "UNAUTHENTICATED"
        async with http_session(url, "ask_unknown_secret") as session:
            error = tool_error(await session.call_tool("get_network_info", {}))
            assert error["code"] == "UNAUTHENTICATED"


async def test_a_page_from_another_origin_is_refused(service: Service) -> None:
    """Bound to loopback, the server refuses requests a web page could forge (DNS
    rebinding): a foreign Host or Origin header."""
    async with http_process(service.address) as url:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        headers = {"Accept": "application/json, text/event-stream"}
        async with httpx2.AsyncClient() as client:
            forged = await client.post(
                url, json=body, headers={**headers, "Origin": "http://evil.example"}
            )
            assert forged.status_code == 403
