"""HTTP transport of the localnet: JSON-RPC 2.0 on POST /, health on GET /health."""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from ._chain import LocalnetChain, LocalnetConfig
from ._rpc import INVALID_REQUEST, PARSE_ERROR, _error, dispatch_all

log = logging.getLogger(__name__)

# A real node refuses bodies above 50 KiB (MAX_REQUEST_BODY_SIZE).
MAX_REQUEST_BODY = 50 * 1024


class LocalnetServer:
    """A Solana JSON-RPC endpoint backed by an in-process LiteSVM cluster.

    `start()` binds (port 0 picks a free one) and `url` says where it listens.
    Every chain operation runs on one dedicated worker thread, so the event loop
    stays free for I/O and the chain sees one request at a time.
    """

    def __init__(self, config: LocalnetConfig | None = None) -> None:
        self.config = config or LocalnetConfig()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="localnet")
        self._chain: LocalnetChain | None = None
        self._runner: web.AppRunner | None = None
        self.host = ""
        self.port = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def chain(self) -> LocalnetChain:
        if self._chain is None:
            raise RuntimeError("localnet not started")
        return self._chain

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run `fn(chain, *args)` on the chain's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self.chain, *args)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._chain = await loop.run_in_executor(self._executor, LocalnetChain, self.config)
        app = web.Application(client_max_size=MAX_REQUEST_BODY)
        app.router.add_post("/", self._handle_rpc)
        app.router.add_get("/health", self._handle_health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        await site.start()
        server = site._server
        if not isinstance(server, asyncio.base_events.Server):
            raise RuntimeError("localnet did not bind")
        self.host, self.port = server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _handle_rpc(self, request: web.Request) -> web.Response:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="Payload Too Large")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _json(_error(None, PARSE_ERROR, "Parse error"))
        if not isinstance(body, dict | list):
            return _json(_error(None, INVALID_REQUEST, "Invalid request"))
        try:
            answer = await self.call(dispatch_all, body)
        except Exception:
            log.exception("localnet request failed")
            return _json(_error(None, -32603, "Internal error"))
        return _json(answer)


def _json(payload: Any) -> web.Response:
    return web.Response(
        body=json.dumps(payload, separators=(",", ":")), content_type="application/json"
    )
