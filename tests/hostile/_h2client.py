"""A raw HTTP/2 client on the `h2` library, for speaking to the server as an attacker
would: streams that never finish, resets, floods of frames the gRPC client libraries
never send."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ssl
import struct
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

Header = tuple[str | bytes, str | bytes]
T = TypeVar("T")


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return struct.pack(">?I", False, len(message)) + message


@dataclass
class Reply:
    """What came back on one stream."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytes = b""
    reset: int | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def header(self, name: str) -> bytes | None:
        for key, value in (*self.headers, *self.trailers):
            if key == name.encode():
                return value
        return None

    @property
    def grpc_status(self) -> int | None:
        value = self.header("grpc-status")
        return int(value) if value is not None else None

    @property
    def grpc_message(self) -> str:
        from urllib.parse import unquote

        value = self.header("grpc-message")
        return unquote(value.decode()) if value else ""


class H2Client:
    """One HTTP/2 connection; frames go out when :meth:`flush` is awaited."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True, header_encoding=None, validate_outbound_headers=False
            )
        )
        self.replies: dict[int, Reply] = {}
        self.closed = asyncio.Event()
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.remote_settings: dict[int, int] = {}
        self.pings_acked = 0
        self._pump: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        preface: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> H2Client:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=host if tls else None, limit=1 << 20
        )
        client = cls(reader, writer)
        client._pump = asyncio.create_task(client._read_loop())
        if preface:
            client.conn.initiate_connection()
            # A window large enough that replies never wait on us.
            client.conn.increment_flow_control_window(1 << 30)
            await client.flush()
        return client

    @property
    def writer(self) -> asyncio.StreamWriter:
        return self._writer

    def start_call(
        self,
        path: str,
        metadata: Sequence[Header] = (),
        *,
        authority: str = "localhost",
        end_stream: bool = False,
        timeout: str | None = None,
    ) -> int:
        """Send a gRPC call's HEADERS (and nothing else); returns the stream id."""
        stream_id = self.conn.get_next_available_stream_id()
        headers: list[Header] = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        if timeout is not None:
            headers.append(("grpc-timeout", timeout))
        headers.extend(metadata)
        self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        self.replies[stream_id] = Reply()
        return stream_id

    def send_message(self, stream_id: int, message: bytes, *, end_stream: bool = True) -> None:
        self.conn.send_data(stream_id, grpc_frame(message), end_stream=end_stream)

    def reset(self, stream_id: int) -> None:
        self.conn.reset_stream(stream_id)

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)
            await self._writer.drain()

    async def call(
        self,
        path: str,
        message: bytes,
        metadata: Sequence[Header] = (),
        *,
        timeout: float = 30.0,
    ) -> Reply:
        """A whole unary call: HEADERS, one message, then wait for the end."""
        stream_id = self.start_call(path, metadata)
        self.send_message(stream_id, message)
        await self.flush()
        reply = self.replies[stream_id]
        await asyncio.wait_for(reply.ended.wait(), timeout)
        return reply

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(1 << 16)
                if not data:
                    break
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    break
                for event in events:
                    self._on(event)
                pending = self.conn.data_to_send()
                if pending and not self._writer.is_closing():
                    self._writer.write(pending)
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            for reply in self.replies.values():
                reply.ended.set()

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self._reply(event.stream_id).headers = list(event.headers)
        elif isinstance(event, h2.events.TrailersReceived):
            self._reply(event.stream_id).trailers = list(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            reply = self._reply(event.stream_id)
            reply.data += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self._reply(event.stream_id).ended.set()
        elif isinstance(event, h2.events.StreamReset):
            reply = self._reply(event.stream_id)
            reply.reset = event.error_code
            reply.ended.set()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for key, changed in event.changed_settings.items():
                self.remote_settings[int(key)] = changed.new_value
        elif isinstance(event, h2.events.PingAckReceived):
            self.pings_acked += 1
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def _reply(self, stream_id: int | None) -> Reply:
        assert stream_id is not None
        return self.replies.setdefault(stream_id, Reply())

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


def max_concurrent_streams(client: H2Client) -> int | None:
    """What the server advertised in SETTINGS_MAX_CONCURRENT_STREAMS, if anything."""
    return client.remote_settings.get(int(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS))


def statuses(replies: Iterable[Reply]) -> dict[int | None, int]:
    counts: dict[int | None, int] = {}
    for reply in replies:
        counts[reply.grpc_status] = counts.get(reply.grpc_status, 0) + 1
    return counts


def in_background(work: Callable[[], Coroutine[Any, Any, T]]) -> concurrent.futures.Future[T]:
    """Run ``work()`` on an event loop of its own in a thread: a flood sent from there
    does not hold up the test's own calls."""
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(asyncio.run(work()))
        except BaseException as exc:  # handed to whoever waits on the future
            done.set_exception(exc)

    threading.Thread(target=run, name="hostile-client", daemon=True).start()
    return done
