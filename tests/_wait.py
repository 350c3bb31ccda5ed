"""Waiting for a condition that a background job makes true (bounded, never a sleep
of a guessed length)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def until(
    check: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = 10.0,
    every: float = 0.05,
    what: str = "the condition",
) -> None:
    """Return once `check()` (plain or async) is true; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        await asyncio.sleep(every)
