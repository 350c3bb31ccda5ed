"""`agent-staking keys ...` against the configured store, as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from service.keys import KeyManager, open_store
from tests.conftest import Backend


async def _cli(database_url: str, *args: str) -> tuple[int, Any, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "keys",
        *args,
        env={**os.environ, "AGENT_STAKING_DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, json.loads(out) if out.strip() else None, err.decode()


async def test_keys_commands(backend: Backend) -> None:
    code, created, _ = await _cli(
        backend.url, "create", "--name", "ops bot", "--scope", "staking", "--scope", "admin"
    )
    assert code == 0
    assert created["secret"].startswith(f"ask_{created['key_id']}_")
    assert created["scopes"] == ["admin", "staking"]

    code, listed, _ = await _cli(backend.url, "list")
    assert code == 0
    assert [k["key_id"] for k in listed["api_keys"]] == [created["key_id"]]
    assert "secret" not in listed["api_keys"][0]

    code, rotated, _ = await _cli(backend.url, "rotate", created["key_id"], "--grace-hours", "1")
    assert code == 0 and rotated["secret"] != created["secret"]
    assert rotated["grace_expire_time"]

    code, revoked, _ = await _cli(backend.url, "revoke", created["key_id"])
    assert code == 0 and revoked["state"] == "revoked"

    # The service sees what the CLI did.
    manager = KeyManager(await open_store(backend.url))
    try:
        assert (await manager.get(created["key_id"])).state.value == "revoked"
    finally:
        await manager.stop()

    code, _, err = await _cli(backend.url, "rotate", "nosuchkey")
    assert code == 1 and "KEY_NOT_FOUND" in err
