"""Several endpoints of one chain: fault proxies in front of the session's localnet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from service.chain import FailoverPolicy, FailoverRpc, HttpSolanaRpc, parse_endpoints
from service.localnet import LocalnetServer
from tests._proxy import RpcProxy

# Fast probing so state changes show within a fraction of a second; bounded waits in
# the tests stay generous for a loaded machine.
FAST = FailoverPolicy(
    probe_interval=0.05,
    max_slot_lag=20,
    breaker_failures=3,
    breaker_cooldown=0.3,
    failback_after=0.8,
)

MakeProxies = Callable[[int], Awaitable[list[RpcProxy]]]
MakeRpc = Callable[..., Awaitable[FailoverRpc]]


async def eventually(
    condition: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition"
) -> float:
    """Wait until `condition()` holds; return how long it took.

    Raises:
        AssertionError: it did not hold within `timeout` seconds.
    """
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
async def make_proxies(localnet: LocalnetServer) -> AsyncIterator[MakeProxies]:
    """`await make_proxies(n)`: n started proxies in front of the localnet, stopped after."""
    started: list[RpcProxy] = []

    async def make(count: int) -> list[RpcProxy]:
        proxies = [RpcProxy(localnet.url) for _ in range(count)]
        for proxy in proxies:
            await proxy.start()
        started.extend(proxies)
        return proxies

    yield make
    for proxy in started:
        await proxy.stop()


@pytest.fixture
async def proxy(make_proxies: MakeProxies) -> RpcProxy:
    """One proxy in front of the localnet."""
    (proxy,) = await make_proxies(1)
    return proxy


@pytest.fixture
async def rpc(proxy: RpcProxy) -> AsyncIterator[HttpSolanaRpc]:
    """A single-endpoint client through `proxy`, with its defaults."""
    client = HttpSolanaRpc(proxy.url)
    yield client
    await client.close()


@pytest.fixture
async def make_rpc() -> AsyncIterator[MakeRpc]:
    """`await make_rpc(urls, policy=FAST, timeout=1.0, pool_size=5)`: a started manager."""
    managers: list[FailoverRpc] = []

    async def make(
        urls: list[str],
        *,
        policy: FailoverPolicy = FAST,
        timeout: float = 1.0,
        pool_size: int = 5,
    ) -> FailoverRpc:
        rpc = FailoverRpc(
            parse_endpoints(urls), policy=policy, timeout=timeout, pool_size=pool_size
        )
        managers.append(rpc)
        await rpc.start()
        return rpc

    yield make
    for rpc in managers:
        await rpc.close()


def named(proxies: list[RpcProxy], *names: str) -> list[str]:
    """`--rpc-url` values naming each proxy."""
    return [f"{proxy.url}#name={name}" for proxy, name in zip(proxies, names, strict=True)]


class Traffic:
    """Callers reading through the manager in a loop, as the chain context would."""

    def __init__(
        self, rpc: FailoverRpc, *, method: str = "getLatestBlockhash", workers: int = 4
    ) -> None:
        self.rpc = rpc
        self.method = method
        self.workers = workers
        self.calls = 0
        self.failures: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def _loop(self) -> None:
        while True:
            try:
                await self.rpc.call(self.method, [{"commitment": "confirmed"}])
            except Exception as exc:  # every failure is a finding
                self.failures.append(repr(exc))
            self.calls += 1
            await asyncio.sleep(0.005)

    async def __aenter__(self) -> Traffic:
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self.workers)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
