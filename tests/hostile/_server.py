"""A real `agent-staking serve` process, as an operator runs it, with everything it
writes (stdout and stderr, gRPC C-core's included) kept for inspection."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServeProcess:
    """`python -m service serve` on the embedded localnet, ephemeral ports everywhere."""

    def __init__(self, data_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "AGENT_STAKING_DATA_DIR": str(data_dir),
            "AGENT_STAKING_LOCALNET_LISTEN": "127.0.0.1:0",
            "AGENT_STAKING_LOCALNET_SLOT_MS": "100",
            "AGENT_STAKING_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}",
            "AGENT_STAKING_SHUTDOWN_GRACE_SECONDS": "1",
            **(env or {}),
        }
        self.process: asyncio.subprocess.Process | None = None
        self.output = bytearray()
        self.announcement: dict[str, Any] = {}
        self.keys: dict[str, str] = {}
        self._readers: list[asyncio.Task[None]] = []
        self._lines: asyncio.Queue[bytes] = asyncio.Queue()

    @property
    def address(self) -> str:
        return str(self.announcement["listening"])

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, *args: str) -> ServeProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "serve",
            "--listen",
            "127.0.0.1:0",
            *args,
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(self.process.stdout, lines=True)),
            asyncio.create_task(self._read(self.process.stderr, lines=False)),
        ]
        while not self.announcement:
            body = await self._next_json()
            if "listening" in body:
                self.announcement = body
        while len(self.keys) < 2:
            key = (await self._next_json()).get("bootstrap_api_key")
            if isinstance(key, dict):
                self.keys[str(key["display_name"])] = str(key["secret"])
        return self

    async def _next_json(self) -> dict[str, Any]:
        while True:
            line = await asyncio.wait_for(self._lines.get(), 120)
            if not line:
                raise AssertionError(f"the server exited:\n{self.output.decode(errors='replace')}")
            if line.startswith(b"{"):
                body: dict[str, Any] = json.loads(line)
                return body

    async def _read(self, stream: asyncio.StreamReader, *, lines: bool) -> None:
        while True:
            line = await stream.readline()
            self.output += line
            if lines:
                self._lines.put_nowait(line)
            if not line:
                return

    def rss_bytes(self) -> int:
        """Resident memory of the server process now."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def log_records(self) -> list[dict[str, Any]]:
        """Every JSON line the process wrote, in order."""
        records = []
        for line in self.output.splitlines():
            if line.startswith(b"{"):
                records.append(json.loads(line))
        return records

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        return self.process.returncode if self.process.returncode is not None else -1
