"""The metrics listener: ``GET /metrics`` on an HTTP port of its own.

It runs on the server's event loop, so the ``stats()`` snapshots read at scrape time
are consistent (no other thread touches the components).
"""

from __future__ import annotations

import logging
import socket

from aiohttp import web

from ._metrics import Metrics

log = logging.getLogger(__name__)


class MetricsListener:
    """Serves ``metrics`` at ``/metrics``; ``start`` binds, ``stop`` closes."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (0: any free port, see :attr:`port`).

        Several worker processes (multiprocess mode) share the port (SO_REUSEPORT):
        whichever answers serves the merged metrics of all of them.

        Raises:
            OSError: the address cannot be bound.
        """
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        app.router.add_get("/", self._index)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(
            runner,
            host,
            port,
            reuse_port=self._metrics.multiprocess and hasattr(socket, "SO_REUSEPORT"),
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def _scrape(self, request: web.Request) -> web.Response:
        body, content_type = self._metrics.exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="agent-staking metrics: /metrics\n")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
