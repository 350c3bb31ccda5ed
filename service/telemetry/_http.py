"""The metrics listener: ``GET /metrics`` on an HTTP port of its own.

Scrapes must not slow calls down: the HTTP server runs on a thread and event loop of
its own, so parsing requests and sending bodies never touches the serving loop. The
body itself is rendered on the serving loop (the ``stats()`` snapshots read at scrape
time stay consistent: no other thread touches the components), at most once per
``min_interval`` seconds; scrapes in between share the last body.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from aiohttp import web

from ._metrics import Metrics

log = logging.getLogger(__name__)


class MetricsListener:
    """Serves ``metrics`` at ``/metrics``; ``start`` binds, ``stop`` closes.

    Args:
        metrics: What is served.
        tls: Returns the TLS context for new connections (reloading replaced
            certificates); None serves plain HTTP.
        min_interval: Scrapes closer together than this share one rendering.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        tls: Callable[[], ssl.SSLContext] | None = None,
        min_interval: float = 1.0,
    ) -> None:
        self._metrics = metrics
        self._tls = tls
        self._min_interval = min_interval
        self._serving_loop: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._watch: asyncio.Task[None] | None = None
        self._rendered: dict[str, tuple[float, bytes, str]] = {}
        self._rendering: dict[str, asyncio.Future[tuple[bytes, str]]] = {}
        self.renders = 0
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (0: any free port, see :attr:`port`).

        Several worker processes (multiprocess mode) share the port (SO_REUSEPORT):
        whichever answers serves the merged metrics of all of them.

        Raises:
            OSError: the address cannot be bound.
        """
        self._serving_loop = asyncio.get_running_loop()
        started: Future[int] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(host, port, started), name="metrics-http", daemon=True
        )
        self._thread.start()
        self.port = await asyncio.wrap_future(started)

    def _run(self, host: str, port: int, started: Future[int]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            if loop.run_until_complete(self._serve(host, port, started)):
                loop.run_forever()
                if self._watch is not None:
                    # Ended here, on its own loop, before that loop closes.
                    self._watch.cancel()
                    loop.run_until_complete(asyncio.gather(self._watch, return_exceptions=True))
                if self._runner is not None:
                    loop.run_until_complete(self._runner.cleanup())
        finally:
            loop.close()

    async def _serve(self, host: str, port: int, started: Future[int]) -> bool:
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        app.router.add_get("/", self._index)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        context = self._tls() if self._tls is not None else None
        site = web.TCPSite(
            runner,
            host,
            port,
            ssl_context=context,
            reuse_port=self._metrics.multiprocess and hasattr(socket, "SO_REUSEPORT"),
        )
        try:
            await site.start()
        except BaseException as exc:
            await runner.cleanup()
            started.set_exception(exc)
            return False
        self._runner = runner
        if self._tls is not None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_certificates())
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        started.set_result(sockets[0].getsockname()[1] if sockets else port)
        return True

    async def _watch_certificates(self) -> None:
        assert self._tls is not None
        while True:
            await asyncio.sleep(1.0)
            try:
                self._tls()
            except Exception:
                log.exception("reloading the metrics TLS certificate failed")

    async def _scrape(self, request: web.Request) -> web.Response:
        body, content_type = await self._body(request.headers.get("Accept") or "")
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _body(self, accept: str) -> tuple[bytes, str]:
        rendered = self._rendered.get(accept)
        if rendered is not None and time.monotonic() - rendered[0] < self._min_interval:
            return rendered[1], rendered[2]
        pending = self._rendering.get(accept)
        if pending is None:
            assert self._serving_loop is not None
            pending = asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self._render(accept), self._serving_loop)
            )
            self._rendering[accept] = pending
            try:
                body, content_type = await pending
            finally:
                del self._rendering[accept]
            self._rendered[accept] = (time.monotonic(), body, content_type)
            return body, content_type
        return await asyncio.shield(pending)

    async def _render(self, accept: str) -> tuple[bytes, str]:
        self.renders += 1
        return self._metrics.exposition(accept)

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="agent-staking metrics: /metrics\n")

    async def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 10)
