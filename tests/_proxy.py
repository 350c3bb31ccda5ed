"""A fault-injecting HTTP proxy in front of a Solana JSON-RPC endpoint (tests only).

Several proxies in front of one localnet are several endpoints of the same chain;
each can then fail on its own: refuse, drop, delay, answer 5xx or a JSON-RPC
error, serve a stale slot (lag), or die and come back on the same port.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

# Answers whose slot numbers a lagging node would report lower.
_SLOT_RESULTS = frozenset({"getSlot", "getBlockHeight"})


@dataclass
class Faults:
    """What the proxy does to requests; change it while the proxy runs."""

    delay_methods: dict[str, float] = field(default_factory=dict)
    """Seconds to hold a request for the named JSON-RPC method."""
    refuse: bool = False
    """Answer every request with HTTP 503."""
    delay: float = 0.0
    """Seconds to hold every request (on top of `delay_methods`)."""
    status: int | None = None
    """Answer every request with this HTTP status (e.g. 500, 502) and no body."""
    drop: bool = False
    """Close the connection without answering."""
    rpc_error: int | None = None
    """Answer every request with a JSON-RPC error of this code (e.g. -32005)."""
    method_errors: dict[str, int] = field(default_factory=dict)
    """Answer requests for the named JSON-RPC method with an error of this code."""
    slot_lag: int = 0
    """Serve a stale chain: slots and block heights in answers are this much lower."""
    batch_refusal: int | None = None
    """Refuse batch requests, as an endpoint without batches does: with this HTTP
    status, or (200) with one JSON-RPC error object instead of a list."""


class RpcProxy:
    """An HTTP proxy with `faults`; `kill()` and `revive()` emulate a crashed node.

    It counts what it sees: `requests` and `connections_opened` (distinct client
    connections), so tests can check that clients reuse and bound their pools;
    `methods` counts JSON-RPC calls by method, each item of a batch as one, and
    `batch_sizes` lists the batches' lengths.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults = Faults()
        self.port = 0
        self.url = ""
        self.requests = 0
        self.methods: dict[str, int] = {}
        self.batch_sizes: list[int] = []
        self.connections_opened = 0
        self._transports: set[asyncio.Transport] = set()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def killed(self) -> bool:
        return self._runner is not None and self._site is None

    @property
    def open_connections(self) -> int:
        """Client connections open now (as far as requests on them have shown)."""
        self._transports = {t for t in self._transports if not t.is_closing()}
        return len(self._transports)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self._forward)
        # A short shutdown: requests held by a delay must not hold up the test's teardown.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await self._listen()
        self._session = aiohttp.ClientSession()

    async def _listen(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._site = site

    async def kill(self) -> None:
        """Die like a crashed node: stop listening and cut every open connection."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        for transport in self._transports:
            transport.abort()
        self._transports.clear()

    async def revive(self) -> None:
        """Listen again on the same port (same URL) after `kill()`."""
        if self._site is None:
            await self._listen()

    async def stop(self) -> None:
        await self.kill()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None and transport not in self._transports:
            self._transports.add(transport)
            self.connections_opened += 1
        self.requests += 1
        body = await request.read()
        faults = self.faults
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return await self._forward_batch(request, parsed)
        method = parsed.get("method", "") if isinstance(parsed, dict) else ""
        refused = await self._request_faults(request, [method])
        if refused is not None:
            return refused
        code = faults.method_errors.get(method, faults.rpc_error)
        if code is not None:
            return web.json_response(_injected(parsed, code))
        assert self._session is not None
        async with self._session.post(
            self.upstream, data=body, headers={"content-type": "application/json"}
        ) as upstream:
            answer = await upstream.read()
        if faults.slot_lag:
            answer = _lagged(answer, method, faults.slot_lag)
        return web.Response(body=answer, content_type="application/json")

    async def _request_faults(
        self, request: web.Request, methods: list[str]
    ) -> web.StreamResponse | None:
        """Count the request's calls and apply the faults that hit a request as a whole
        (delay, drop, refusal, HTTP status): the answer they give, or None."""
        faults = self.faults
        for method in methods:
            self.methods[method] = self.methods.get(method, 0) + 1
        delay = faults.delay + max((faults.delay_methods.get(m, 0.0) for m in methods), default=0)
        if delay:
            await asyncio.sleep(delay)
        if faults.drop and request.transport is not None:
            request.transport.abort()
            raise asyncio.CancelledError  # nothing to answer on a closed connection
        if faults.refuse:
            return web.Response(status=503)
        if faults.status is not None:
            return web.Response(status=faults.status)
        return None

    async def _forward_batch(self, request: web.Request, items: list[Any]) -> web.StreamResponse:
        """A batch: each item counted and faulted as a request of its own would be
        (errors per item; delays, drops and HTTP statuses for the whole request)."""
        faults = self.faults
        self.batch_sizes.append(len(items))
        methods = [item.get("method", "") if isinstance(item, dict) else "" for item in items]
        refused = await self._request_faults(request, methods)
        if refused is not None:
            return refused
        if faults.batch_refusal == 200:
            error = {"code": -32600, "message": "batch requests are not supported"}
            return web.json_response({"jsonrpc": "2.0", "id": None, "error": error})
        if faults.batch_refusal is not None:
            return web.Response(status=faults.batch_refusal)
        answers: list[Any] = [None] * len(items)
        forwarded: list[int] = []
        for i, (item, method) in enumerate(zip(items, methods, strict=True)):
            code = faults.method_errors.get(method, faults.rpc_error)
            if code is None:
                forwarded.append(i)
            else:
                answers[i] = _injected(item, code)
        if forwarded:
            assert self._session is not None
            async with self._session.post(
                self.upstream, json=[items[i] for i in forwarded]
            ) as upstream:
                for i, answer in zip(forwarded, await upstream.json(), strict=True):
                    answers[i] = answer
        return web.json_response(answers)


def _injected(call: Any, code: int) -> dict[str, Any]:
    """The JSON-RPC error answer the proxy gives ``call`` in place of the node's."""
    request_id = call.get("id") if isinstance(call, dict) else None
    error = {"code": code, "message": "injected by the test proxy"}
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def _lagged(raw: bytes, method: str, lag: int) -> bytes:
    """The answer a node `lag` slots behind would give (slots and heights only)."""
    try:
        answer = json.loads(raw)
    except ValueError:
        return raw
    result = answer.get("result") if isinstance(answer, dict) else None
    if result is None:
        return raw
    if method in _SLOT_RESULTS and isinstance(result, int):
        answer["result"] = max(0, result - lag)
    elif method == "getEpochInfo" and isinstance(result, dict):
        for key in ("absoluteSlot", "blockHeight", "slotIndex"):
            result[key] = max(0, int(result[key]) - lag)
    elif isinstance(result, dict):
        context = result.get("context")
        if isinstance(context, dict) and "slot" in context:
            context["slot"] = max(0, int(context["slot"]) - lag)
        value = result.get("value")
        if method == "getLatestBlockhash" and isinstance(value, dict):
            value["lastValidBlockHeight"] = int(value["lastValidBlockHeight"]) - lag
    return json.dumps(answer, separators=(",", ":")).encode()


class TcpProxy:
    """A TCP proxy in front of a database (or any TCP service), cut at will.

    `refuse()`: stop listening and reset every open connection, as a stopped server
    or a firewall that rejects does (clients see "connection refused" at once).
    `blackhole()`: keep accepting but pass no byte either way, as a partition that
    drops packets does (clients wait until their own timeouts). `restore()` ends
    either; bytes held during a blackhole then flow on, as TCP retransmits them.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    @classmethod
    def for_url(cls, url: str) -> TcpProxy:
        """A proxy in front of the host and port of a `postgresql://` (or similar) URL."""
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432)

    def url_through(self, url: str) -> str:
        """`url` with its host and port replaced by this proxy's."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def refuse(self) -> None:
        """Refuse new connections and reset the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._reset_all()

    def blackhole(self) -> None:
        """Accept, but move no byte (until `restore()`)."""
        self._flowing.clear()

    async def restore(self) -> None:
        """Listen (on the same port) and pass bytes again."""
        self._flowing.set()
        if self._server is None:
            await self.start()

    async def stop(self) -> None:
        await self.refuse()
        self._flowing.set()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            transport = writer.transport
            if not transport.is_closing():
                transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            await self._flowing.wait()  # a blackholed connect never gets an answer
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer)),
            asyncio.ensure_future(self._pipe(up_reader, writer)),
        ]
        self._pipes.update(pipes)
        try:
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._pipes.difference_update(pipes)
            for end in (writer, up_writer):
                self._writers.discard(end)
                end.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self._flowing.wait()  # held, not dropped: flows on after restore()
            writer.write(data)
            await writer.drain()
        writer.transport.abort()
