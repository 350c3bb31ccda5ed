"""Fixtures of the keys suite (the databases come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.keys import KeyManager, KeyStore, open_store
from tests.conftest import Backend, FakeClock


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[KeyStore]:
    opened = await open_store(backend.url)
    yield opened
    await opened.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def manager(store: KeyStore, clock: FakeClock) -> AsyncIterator[KeyManager]:
    """A manager with a long cache (invalidation, not expiry, must keep it right)."""
    keys = KeyManager(store, clock=clock, cache_ttl=60.0)
    yield keys
    await keys.stop()
