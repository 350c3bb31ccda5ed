"""Everything the process writes to stderr, logged as records (and so redacted).

gRPC core (C++) writes its diagnostics straight to file descriptor 2, around Python's
logging; so do the interpreter's last-resort tracebacks. ``serve`` points descriptor 2
at a pipe and a thread turns each line into a log record on the ``grpc.core`` logger
(core's own lines, level from their first letter) or the ``stderr`` logger (the rest,
one record per burst of lines). The records go out through the configured handler:
one JSON line each, scrubbed of secrets like every other.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Final

# absl's prefix, as gRPC core writes it: "E1207 06:44:28.123456   1234 file.cc:12] text".
_CORE_LINE: Final = re.compile(rb"^([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]]+)\] ?(.*)$")
_LEVELS: Final = {
    b"I": logging.INFO,
    b"W": logging.WARNING,
    b"E": logging.ERROR,
    b"F": logging.CRITICAL,
}
_MAX_RECORD: Final = 64 * 1024


class StderrCapture:
    """Descriptor 2 redirected into the logs until :meth:`close`."""

    def __init__(self) -> None:
        self._core = logging.getLogger("grpc.core")
        self._other = logging.getLogger("stderr")
        read_end, write_end = os.pipe()
        self._saved = os.dup(2)
        os.dup2(write_end, 2)
        os.close(write_end)
        self._read_end = read_end
        # A failing log handler must not report itself on stderr: that would feed the
        # pipe this thread drains.
        logging.raiseExceptions = False
        self._thread = threading.Thread(target=self._pump, name="stderr-to-log", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self._read_end, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
            lines = pending.split(b"\n")
            pending = lines.pop()
            if len(pending) > _MAX_RECORD:
                lines.append(pending)
                pending = b""
            self._emit(lines)
        if pending:
            self._emit([pending])
        os.close(self._read_end)

    def _emit(self, lines: list[bytes]) -> None:
        other: list[bytes] = []
        for line in lines:
            match = _CORE_LINE.match(line)
            if match is None:
                if line.strip():
                    other.append(line)
                continue
            if other:
                self._log_other(other)
                other = []
            level, where, text = match.groups()
            self._core.log(
                _LEVELS[level],
                "%s",
                text.decode("utf-8", "replace"),
                extra={"source": where.decode("utf-8", "replace")},
            )
        if other:
            self._log_other(other)

    def _log_other(self, lines: list[bytes]) -> None:
        self._other.warning("%s", b"\n".join(lines).decode("utf-8", "replace")[:_MAX_RECORD])

    def close(self) -> None:
        """Give descriptor 2 back and log what is still in the pipe."""
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._thread.join(5)


def capture_stderr() -> StderrCapture:
    """Log everything written to descriptor 2 from now on (see the module docstring)."""
    return StderrCapture()
