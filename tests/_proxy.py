"""A fault-injecting HTTP proxy in front of a Solana JSON-RPC endpoint (tests only)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web


@dataclass
class Faults:
    """What the proxy does to requests; change it while the proxy runs."""

    delay_methods: dict[str, float] = field(default_factory=dict)
    """Seconds to hold a request for the named JSON-RPC method."""
    refuse: bool = False
    """Answer every request with HTTP 503."""


class RpcProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults = Faults()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.faults.refuse:
            return web.Response(status=503)
        try:
            method = json.loads(body).get("method", "")
        except (ValueError, AttributeError):
            method = ""
        delay = self.faults.delay_methods.get(method)
        if delay:
            await asyncio.sleep(delay)
        assert self._session is not None
        async with self._session.post(
            self.upstream, data=body, headers={"content-type": "application/json"}
        ) as upstream:
            return web.Response(body=await upstream.read(), content_type="application/json")
