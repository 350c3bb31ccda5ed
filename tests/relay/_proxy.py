"""A JSON-RPC proxy that can hold transactions back from the localnet (relay tests only).

With `swallow_sends` on, sendTransaction is answered as a node would (the
signature) but never forwarded: the transaction stays valid and unlanded until its
blockhash leaves the window, which is how a congested or partitioned cluster looks
to the relay. Every method call is counted.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web
from solders.transaction import VersionedTransaction


class SwallowingProxy:
    """Forwards JSON-RPC to `upstream`, except sendTransaction while `swallow_sends`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.swallow_sends = False
        self.calls: Counter[str] = Counter()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self._forward)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
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

    def _swallowed(self, request: Any) -> dict[str, Any] | None:
        if not isinstance(request, dict):
            return None
        method = str(request.get("method", ""))
        self.calls[method] += 1
        if method != "sendTransaction" or not self.swallow_sends:
            return None
        wire = base64.b64decode(request["params"][0])
        signature = str(VersionedTransaction.from_bytes(wire).signatures[0])
        return {"jsonrpc": "2.0", "result": signature, "id": request.get("id")}

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            swallowed = self._swallowed(json.loads(body))
        except (ValueError, KeyError, IndexError, TypeError):
            swallowed = None
        if swallowed is not None:
            return web.json_response(swallowed)
        assert self._session is not None
        async with self._session.post(
            self.upstream, data=body, headers={"content-type": "application/json"}
        ) as upstream:
            return web.Response(body=await upstream.read(), content_type="application/json")
