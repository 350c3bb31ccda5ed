"""A real `agent-staking serve` process for tests that crash it, start it without its
dependencies, or read exactly what it prints."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port nobody listens on now (for a process that must be told its port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_env(database_url: str, rpc_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a server on `database_url` and one Solana endpoint, without
    fees and without the access log (plus `extra` settings)."""
    return {
        "AGENT_STAKING_DATABASE_URL": database_url,
        "AGENT_STAKING_RPC_URLS": json.dumps([rpc_url]),
        "AGENT_STAKING_SERVICE_FEE_BPS": "0",
        "AGENT_STAKING_DATA_DIR": str(data_dir),
        "AGENT_STAKING_LOG_LEVELS": '{"service.access": "WARNING"}',
        **extra,
    }


class ServerProcess:
    """`python -m service serve` with the given environment; its stdout kept as lines."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.lines: list[str] = []
        self.stderr = b""
        self._reader = asyncio.create_task(self._read())
        self._stderr_reader = asyncio.create_task(self._read_stderr())
        self._new_line = asyncio.Event()

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))
            self._new_line.set()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr = await self.process.stderr.read()

    def records(self) -> list[dict[str, Any]]:
        """Every JSON line printed so far (announcements and logs)."""
        found = []
        for line in self.lines:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    async def wait_for_line(self, text: str, timeout: float = 60.0) -> str:
        """The first line containing `text` (waiting for it), or fail."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if text in line:
                    return line
            seen = len(self.lines)
            if self.process.returncode is not None and self._reader.done():
                raise AssertionError(
                    f"the server exited ({self.process.returncode}) before {text!r}"
                )
            self._new_line.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no line with {text!r} in {timeout} s: {self.lines[-5:]}")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._new_line.wait(), min(remaining, 0.5))

    async def kill(self) -> None:
        """SIGKILL: nothing runs after it (no drain, no flush, no release)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def exited(self, timeout: float = 30.0) -> int:
        """Wait for the process to end on its own; its exit code (output read whole)."""
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await asyncio.gather(self._reader, self._stderr_reader)
        return code

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a graceful drain); its exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            await self.kill()
            raise
        await asyncio.gather(self._reader, self._stderr_reader)
        return code


@asynccontextmanager
async def server_process(
    env: Mapping[str, str], *, port: int | None = None, args: tuple[str, ...] = ()
) -> AsyncIterator[ServerProcess]:
    """A server process on `port` (a free one by default); killed if still running at
    the end."""
    port = port or free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-listen",
        "off",
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    server = ServerProcess(process, port)
    try:
        yield server
    finally:
        await server.kill()
        for task in (server._reader, server._stderr_reader):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
