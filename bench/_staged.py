"""``python -m service`` keeping only the interceptor stages named in ``BENCH_STAGES``
(class names, comma-separated; unset: every stage), for ``bench.stages``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import service.server
from service.cli import main
from service.interceptors import InterceptorChain, Stage


class _Selected(InterceptorChain):
    def __init__(self, stages: Sequence[Stage]) -> None:
        names = os.environ.get("BENCH_STAGES")
        if names is not None:
            wanted = {name for name in names.split(",") if name}
            stages = [stage for stage in stages if type(stage).__name__ in wanted]
        super().__init__(stages)


# The server builds its chain from this name at start.
service.server.InterceptorChain = _Selected  # type: ignore[attr-defined]

if __name__ == "__main__":
    sys.exit(main())
