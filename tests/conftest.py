"""Fixtures shared by every suite: one localnet per test process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.localnet import LocalnetConfig, LocalnetServer


@pytest.fixture(scope="session")
async def localnet() -> AsyncIterator[LocalnetServer]:
    """A localnet over HTTP on an ephemeral port, shared by the whole session.

    Slots are 100 ms so confirmation depths are reached quickly while a fetched
    blockhash still stays valid for 15 s.
    """
    server = LocalnetServer(LocalnetConfig(slot_duration=0.1, slots_per_epoch=432_000))
    await server.start()
    yield server
    await server.stop()
