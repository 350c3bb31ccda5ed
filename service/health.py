"""Health: ``grpc.health.v1.Health`` on the gRPC port, and on a port of its own.

The gRPC port's health service shares the serving event loop with every call: a flood
of calls (thousands of streams that never send their request, say) delays a probe
behind them, and a port with TLS cannot be probed by the kubelet's plaintext gRPC
probe. The health port (``health_listen``) serves the same statuses from a server on a
thread and event loop of its own, plaintext, health only: what the port says is what
the gRPC port says, and a busy serving loop does not make it late. Point liveness and
readiness probes at it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from service.api import add_reflection, add_servicer

log = logging.getLogger(__name__)


MAX_LISTED = 100
"""Services one List answer holds at most (the protocol's own suggestion)."""

LIVENESS = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
"""The liveness name: SERVING whenever the process answers, draining included (a
liveness probe failing during a drain would have the pod killed before it is done)."""


class Health(HealthServicer):  # type: ignore[misc]  # grpc_health ships no types
    """The standard async health servicer, with ``List`` (which it leaves unimplemented:
    every call would log a traceback), and a drain that leaves :data:`LIVENESS` be."""

    async def enter_graceful_shutdown(self) -> None:
        """NOT_SERVING for every service but :data:`LIVENESS`, and no change after."""
        if self._gracefully_shutting_down:  # type: ignore[has-type]
            return
        self._gracefully_shutting_down = True
        for service in list(self._server_status):
            if service != LIVENESS:
                await self._set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        response = health_pb2.HealthListResponse()
        for service, status in sorted(self._server_status.items())[:MAX_LISTED]:
            response.statuses[service].status = status
        return response


class HealthEndpoint:
    """A health-only gRPC server on its own thread; statuses are set from any loop."""

    def __init__(self, options: Sequence[tuple[str, Any]] = ()) -> None:
        self._options = list(options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servicer: Health | None = None
        self._server: grpc.aio.Server | None = None
        self._stopped: asyncio.Event | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (0: any free port, see :attr:`port`).

        Raises:
            OSError: the address cannot be bound.
        """
        started: Future[int] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(host, port, started), name="health-grpc", daemon=True
        )
        self._thread.start()
        self.port = await asyncio.wrap_future(started)

    def _run(self, host: str, port: int, started: Future[int]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(host, port, started))
        finally:
            loop.close()

    async def _serve(self, host: str, port: int, started: Future[int]) -> None:
        self._stopped = asyncio.Event()
        self._servicer = Health()
        server = grpc.aio.server(options=self._options)
        add_servicer(health_pb2_grpc.add_HealthServicer_to_server, self._servicer, server)
        # For grpcurl, which knows a service only through reflection.
        add_reflection(server, [LIVENESS])
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as exc:
            started.set_exception(OSError(f"could not bind the health port {address}: {exc}"))
            return
        await server.start()
        self._server = server
        started.set_result(bound)
        await self._stopped.wait()
        await server.stop(0)

    async def set(self, service: str, status: int) -> None:
        """Report ``status`` for ``service`` (``""``: the whole server)."""
        await self._on_loop(self._set(service, status))

    async def _set(self, service: str, status: int) -> None:
        assert self._servicer is not None
        await self._servicer.set(service, status)

    async def enter_graceful_shutdown(self) -> None:
        """NOT_SERVING for every service but the liveness name from now on (draining)."""
        await self._on_loop(self._drain())

    async def _drain(self) -> None:
        assert self._servicer is not None
        await self._servicer.enter_graceful_shutdown()

    async def _on_loop(self, work: Any) -> None:
        if self._loop is None or self._loop.is_closed():
            work.close()
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self._loop))

    async def stop(self) -> None:
        loop, thread, stopped = self._loop, self._thread, self._stopped
        if loop is None or thread is None or stopped is None:
            return
        self._thread = None
        if not loop.is_closed():
            loop.call_soon_threadsafe(stopped.set)
        await asyncio.to_thread(thread.join, 10)
