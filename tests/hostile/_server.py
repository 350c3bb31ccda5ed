"""A real `agent-staking serve` process, as an operator runs it, with everything it
writes (stdout and stderr, gRPC C-core's included) kept for inspection.

Synchronous (threads read its output), so that both plain and asyncio tests can use
it: an asyncio test starts it with ``await asyncio.to_thread(process.start)``.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

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
        self.process: subprocess.Popen[bytes] | None = None
        self.announcement: dict[str, Any] = {}
        self.keys: dict[str, str] = {}
        self._output = bytearray()
        self._lock = threading.Lock()
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._readers: list[threading.Thread] = []

    @property
    def output(self) -> bytes:
        """Everything written so far, stdout and stderr interleaved by arrival."""
        with self._lock:
            return bytes(self._output)

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

    def start(self, *args: str, timeout: float = 60.0) -> ServeProcess:
        """Start and wait for the announcement and both bootstrap keys.

        ``timeout`` stays well below pytest's per-test timeout (120 s), so that a start
        that never ends fails here, with everything the server wrote.
        """
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--listen", "127.0.0.1:0", *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        deadline = time.monotonic() + timeout
        while not self.announcement:
            body = self._next_json(deadline)
            if "listening" in body:
                self.announcement = body
        while len(self.keys) < 2:
            key = self._next_json(deadline).get("bootstrap_api_key")
            if isinstance(key, dict):
                self.keys[str(key["display_name"])] = str(key["secret"])
        return self

    def _next_json(self, deadline: float) -> dict[str, Any]:
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no announcement:\n{self.output.decode(errors='replace')}"
                ) from None
            if not line:
                raise AssertionError(f"the server exited:\n{self.output.decode(errors='replace')}")
            if line.startswith(b"{"):
                body: dict[str, Any] = json.loads(line)
                return body

    def _read(self, stream: IO[bytes], lines: bool) -> None:
        for line in iter(stream.readline, b""):
            with self._lock:
                self._output += line
            if lines:
                self._lines.put(line)
        if lines:
            self._lines.put(b"")

    def rss_bytes(self) -> int:
        """Resident memory of the server process now."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def log_records(self) -> list[dict[str, Any]]:
        """Every JSON line the process wrote, in order."""
        return [json.loads(line) for line in self.output.splitlines() if line.startswith(b"{")]

    def stop(self) -> int:
        """SIGTERM, wait for the drain; the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for reader in self._readers:
            reader.join(10)
        return self.process.returncode
