"""``python -m bench._gc_traced serve ...``: ``agent-staking serve`` with every pass of
the cyclic garbage collector timed (``gc.callbacks``), for ``bench.gc_pauses``.

Passes are counted apart from the moment the server serves (the CLI's ``gc.freeze``
call marks it); with ``BENCH_GC_FREEZE=0`` that call marks the moment and freezes
nothing. At exit the passes go to ``BENCH_GC_OUT`` as JSON: per generation and phase
(``starting``, ``serving``), each pass's duration in seconds.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import time
from typing import Any

_phase = {"now": "starting"}
_passes: dict[str, list[float]] = {}
_started = [0.0]
_freeze = gc.freeze


def _serving() -> None:
    _phase["now"] = "serving"
    if os.environ.get("BENCH_GC_FREEZE", "1") == "1":
        _freeze()


def _timed(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    key = f"{info['generation']}/{_phase['now']}"
    _passes.setdefault(key, []).append(time.perf_counter() - _started[0])


def _write() -> None:
    out = os.environ.get("BENCH_GC_OUT")
    if out:
        with open(out, "w") as file:
            json.dump({"passes": _passes, "tracked_objects": len(gc.get_objects())}, file)


def main() -> int:
    gc.freeze = _serving
    gc.callbacks.append(_timed)
    atexit.register(_write)
    from service.cli import main as serve

    return serve()


if __name__ == "__main__":
    sys.exit(main())
