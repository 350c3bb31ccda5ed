"""Durability: migrations, reopening, what the database holds (never a secret)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from service.core.errors import ErrorKind
from service.keys import (
    KeyManager,
    KeyStore,
    KeyStoreUnavailableError,
    open_store,
)
from service.store import MIGRATIONS, migrate
from tests.conftest import Backend, FakeClock


def _secret_forms(token: str) -> list[bytes]:
    """Every way a leaked secret could appear: the token, its secret part, its raw bytes."""
    encoded = token.split("_", 2)[2]
    raw = base64.urlsafe_b64decode(encoded + "=")
    return [token.encode(), encoded.encode(), raw, raw.hex().encode(), base64.b64encode(raw)]


def _contains(value: Any, needle: bytes) -> bool:
    if isinstance(value, bytes | bytearray | memoryview):
        return needle in bytes(value)
    return needle in str(value).encode()


async def test_migrations_are_versioned_and_idempotent(backend: Backend) -> None:
    versions = [m.version for m in MIGRATIONS[backend.dialect]]
    assert versions == list(range(1, len(versions) + 1))
    assert await migrate(backend.url) == versions
    assert await migrate(backend.url) == []
    store = await open_store(backend.url)  # migrates again: nothing to do
    await store.close()
    rows = (await backend.rows())["schema_migrations"]
    assert sorted(row[0] for row in rows) == versions


async def test_concurrent_first_starts_apply_each_migration_once(backend: Backend) -> None:
    # Two replicas starting together on an empty database.
    results = await asyncio.gather(migrate(backend.url), migrate(backend.url))
    versions = [m.version for m in MIGRATIONS[backend.dialect]]
    assert sorted(results) == [[], versions]
    assert len((await backend.rows())["schema_migrations"]) == len(versions)


async def test_keys_survive_a_restart_and_no_secret_is_stored_or_logged(
    backend: Backend, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = await open_store(backend.url)
    manager = KeyManager(store, clock=clock)
    await manager.start()
    key, first = await manager.create(display_name="persisted", scopes=["staking", "admin"])
    _, second = await manager.rotate(key.key_id, grace_period=timedelta(hours=2))
    other, third = await manager.create(display_name="other", scopes=["staking"])
    await manager.authenticate(second)
    manager.record_use(key.key_id)
    await manager.stop()  # flushes usage and closes the store

    store = await open_store(backend.url)
    try:
        reopened = KeyManager(store, clock=clock)
        for token, key_id in ((first, key.key_id), (second, key.key_id), (third, other.key_id)):
            assert (await reopened.authenticate(token)).key_id == key_id
        again = await reopened.get(key.key_id)
        assert (again.display_name, again.scopes, again.request_count) == (
            "persisted",
            frozenset({"staking", "admin"}),
            1,
        )
        assert again.grace_expire_time == clock.now + timedelta(hours=2)
    finally:
        await store.close()

    dump = await backend.rows()
    cells = [cell for rows in dump.values() for row in rows for cell in row]
    digest = hashlib.sha256(_secret_forms(second)[1]).digest()
    assert any(_contains(cell, digest) for cell in cells), "the dump does not show the digests"
    files = []
    if backend.sqlite_path is not None:
        files = [p.read_bytes() for p in backend.sqlite_path.parent.iterdir()]
    for token in (first, second, third):
        for needle in _secret_forms(token):
            assert not any(_contains(cell, needle) for cell in cells)
            assert not any(needle in data for data in files)
            assert needle.decode("latin-1") not in caplog.text


async def test_open_store_creates_directories_and_accepts_memory(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b" / "keys.db"
    store = await open_store(f"sqlite:///{nested}")
    await store.close()
    assert nested.exists()
    memory = await open_store("sqlite:///:memory:")
    try:
        manager = KeyManager(memory)
        _, token = await manager.create(display_name="m", scopes=["staking"])
        assert await manager.authenticate(token)
    finally:
        await memory.close()


async def test_unsupported_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as caught:
        await open_store("mysql://user:hunter2@db/keys")
    assert "hunter2" not in str(caught.value)


async def test_unreachable_postgres_is_unavailable_and_keeps_the_password_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(KeyStoreUnavailableError) as caught:
        await open_store("postgresql://postgres:hunter2@127.0.0.1:1/test")
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    assert "hunter2" not in str(caught.value) and "hunter2" not in caplog.text


async def test_an_outage_is_unavailable_and_loses_no_usage(
    backend: Backend, store: KeyStore, clock: FakeClock
) -> None:
    manager = KeyManager(store, clock=clock)
    key, token = await manager.create(display_name="k", scopes=["staking"])
    for _ in range(3):
        await manager.authenticate(token)
        manager.record_use(key.key_id)
    # An outage the store cannot hide: its table is gone for a while.
    await backend.execute("ALTER TABLE api_keys RENAME TO api_keys_away")
    with pytest.raises(KeyStoreUnavailableError) as caught:
        await manager.flush_usage()
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    with pytest.raises(KeyStoreUnavailableError):
        await manager.get(key.key_id)
    await backend.execute("ALTER TABLE api_keys_away RENAME TO api_keys")
    # Calls fail at once until the database's probe sees it answer again.
    for _ in range(100):
        try:
            await manager.flush_usage()
            break
        except KeyStoreUnavailableError:
            await asyncio.sleep(0.05)
    assert (await manager.get(key.key_id)).request_count == 3


async def test_a_stopped_manager_lets_the_process_exit(tmp_path: Path) -> None:
    # The server keeps its manager referenced until exit; the store's worker thread
    # must still be gone once stop() returns, or interpreter shutdown waits forever.
    script = (
        "import asyncio\n"
        "from service.keys import KeyManager, open_store\n"
        "held = []\n"
        "async def main():\n"
        f"    held.append(KeyManager(await open_store('sqlite:///{tmp_path}/k.db')))\n"
        "    await held[0].start()\n"
        "    await held[0].bootstrap_if_empty()\n"
        "    await held[0].stop()\n"
        "asyncio.run(main())\n"
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
    try:
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
