"""Structured logs: one JSON object per line, correlated with the trace of the call.

Every line has ``time``, ``level``, ``logger`` and ``message``; inside a traced call
also ``trace_id`` and ``span_id`` (of the span current when the line was written),
``request_id`` (the trace id, as in the ``x-request-id`` response metadata),
``grpc_service``, ``grpc_method`` and, once known, ``key_id`` and ``wallet``. Fields
passed with ``extra=`` (the access log's ``grpc_code``, ``duration_ms``, ...) are added
as they are.

No secret is logged: the code never passes one, and as a safety net every string is
scrubbed of anything shaped like an API key secret (``ask_<key_id>_<secret>``, wherever
it stands, glued to other bytes or not) or a bearer credential before it is written.
gRPC's own complaints about call metadata that is not UTF-8 (which quote the raw value,
an API key possibly among it) are replaced by one line without the value, at most once a
minute; and what gRPC core writes to the process's stderr is read back and logged through
the same formatter (:func:`capture_stderr`).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any, Final

from opentelemetry import trace

from ._context import current_call

# ask_<16 key-id chars>_<43 secret chars>: keep the key id, drop the secret. No word
# boundary: a secret glued to other characters (b'\\xffask_...') is still one.
_TOKEN: Final = re.compile(r"(ask_[0-9a-z]{16}_)[A-Za-z0-9_-]{20,}")
_BEARER: Final = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
REDACTED: Final = "<redacted>"

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def redact(text: str) -> str:
    """``text`` without API key secrets or bearer credentials."""
    if "ask_" in text:
        text = _TOKEN.sub(rf"\g<1>{REDACTED}", text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(rf"\g<1>{REDACTED}", text)
    return text


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    return redact(str(value))


# One encoder for every line (json.dumps with options builds a new one per call).
_JSON: Final = json.JSONEncoder(ensure_ascii=False, default=str)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        # (unix second, its ISO 8601 text): lines come many to a second.
        self._second: tuple[int, str] = (-1, "")

    def _time(self, created: float) -> str:
        """``created`` in ISO 8601 UTC, to the millisecond (as ``datetime`` rounds it)."""
        second = int(created)
        micros = round((created - second) * 1_000_000)
        if micros == 1_000_000:
            second, micros = second + 1, 0
        cached, text = self._second
        if second != cached:
            text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (second, text)
        return f"{text}.{micros // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            body["trace_id"] = f"{span.trace_id:032x}"
            body["span_id"] = f"{span.span_id:016x}"
        call = current_call.get()
        if call is not None:
            body["request_id"] = call.request_id
            body["grpc_service"] = call.service
            body["grpc_method"] = call.method
            if call.key_id is not None:
                body["key_id"] = call.key_id
            if call.wallet is not None:
                body["wallet"] = call.wallet
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                body[key] = _clean(value)
        if record.exc_info:
            body["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            body["exception"] = redact(record.exc_text)
        if record.stack_info:
            body["stack"] = redact(self.formatStack(record.stack_info))
        return _JSON.encode(body)


class TextFormatter(logging.Formatter):
    """Plain lines for a terminal, scrubbed like the JSON ones."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        call = current_call.get()
        if call is not None and call.request_id:
            line += f" [request_id={call.request_id}]"
        return redact(line)


class LogHandler(logging.StreamHandler[IO[str]]):
    """Writes formatted records to a stream; can hold them back for a while.

    ``agent-staking serve`` prints its machine-readable announcement (``listening``,
    bootstrap keys) as the first lines of stdout: log lines written while the server
    starts are held (already formatted, with their own timestamps and trace ids) and
    written right after it (:meth:`release_held`), or once the hold has lasted
    ``max_hold`` seconds.
    """

    def __init__(self, stream: IO[str], *, max_hold: float = 30.0) -> None:
        super().__init__(stream)
        self._held: list[str] | None = None
        self._hold_until = 0.0
        self._max_hold = max_hold

    def hold(self) -> None:
        """Keep lines back until :meth:`release_held` (or ``max_hold`` seconds)."""
        self._held = []
        self._hold_until = time.monotonic() + self._max_hold

    def release_held(self) -> None:
        """Write the held lines and stop holding."""
        held, self._held = self._held, None
        if held:
            self.acquire()
            try:
                for line in held:
                    self.stream.write(line + self.terminator)
                self.flush()
            finally:
                self.release()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if self._held is not None:
                if time.monotonic() < self._hold_until and len(self._held) < 10_000:
                    self._held.append(line)
                    return
                self.release_held()
            self.acquire()
            try:
                self.stream.write(line + self.terminator)
                self.flush()
            finally:
                self.release()
        except Exception:
            self.handleError(record)


class MetadataEncodingFilter(logging.Filter):
    """gRPC logs ``Invalid encoding on <raw bytes>`` with a traceback, twice, for every
    call whose metadata is not UTF-8: the raw value may hold an API key, and a client
    can send such calls in a loop. This keeps one line a minute, without the value."""

    def __init__(self, *, interval: float = 60.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._last = -interval
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Invalid encoding on"):
            return True
        now = self._clock()
        if now - self._last < self._interval:
            self._suppressed += 1
            return False
        record.msg = (
            "call metadata that is not UTF-8 was received (value withheld; %d more such "
            "reports dropped since the last one)"
        )
        record.args = (self._suppressed,)
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        self._last = now
        self._suppressed = 0
        return True


def configure_logging(
    *,
    level: str = "INFO",
    levels: Mapping[str, str] | None = None,
    fmt: str = "json",
    stream: IO[str] | None = None,
) -> LogHandler:
    """Send every log record to ``stream`` (default stdout) in ``fmt``; set levels.

    Replaces the root logger's handlers: call it once, from the program's ``main``.

    Args:
        level: Level of the root logger (and so of every logger without its own).
        levels: Levels of single loggers by name.
        fmt: ``json`` or ``text``.
        stream: Where lines go.

    Returns:
        The handler (see :meth:`LogHandler.hold`).
    """
    # Neither format writes a record's thread or process: not looked up for each record
    # (the access log makes one per call).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = LogHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The metrics listener's own access lines would only repeat every scrape.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    cygrpc = logging.getLogger("grpc._cython.cygrpc")
    for old_filter in [f for f in cygrpc.filters if isinstance(f, MetadataEncodingFilter)]:
        cygrpc.removeFilter(old_filter)
    cygrpc.addFilter(MetadataEncodingFilter())
    for name, value in (levels or {}).items():
        logging.getLogger(name).setLevel(value.upper())
    logging.captureWarnings(True)
    return handler
