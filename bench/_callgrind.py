"""Instructions executed by a server process, counted by Valgrind's callgrind.

The server runs under ``valgrind --tool=callgrind --instr-atstart=no`` (start-up and
warm-up at a few times native speed, nothing counted); ``callgrind_control`` then
switches instrumentation on, zeroes the counters and reads them (the sum over the
process's threads) around a window of work. An instruction count does not depend on
what else the machine runs, unlike CPU time: only on what the process executed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable

_THREAD_TOTAL = re.compile(r"^\s*Th\s+\d+\s+([\d,]+)\s*$", re.MULTILINE)


def valgrind_path() -> str | None:
    return shutil.which("valgrind") if shutil.which("callgrind_control") else None


def wrapper(out_dir: str) -> list[str]:
    """The command prefix that starts a program under callgrind, counting nothing yet."""
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--dump-instr=no",
        f"--callgrind-out-file={out_dir}/callgrind.out.%p",
        "--log-file=" + f"{out_dir}/valgrind.%p.log",
    ]


class Counter:
    """Counts the instructions of the callgrind process ``pid``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _control(self, *args: str) -> str:
        done = subprocess.run(
            ["callgrind_control", *args, str(self.pid)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0 or "not detected" in done.stdout + done.stderr:
            raise RuntimeError(f"callgrind_control {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def instrument(self) -> None:
        self._control("--instr=on")

    def zero(self) -> None:
        self._control("--zero")

    def read(self) -> int:
        """Instructions since the last :meth:`zero`, all threads."""
        totals = _THREAD_TOTAL.findall(self._control("-e", "Ir"))
        if not totals:
            raise RuntimeError("callgrind_control printed no totals")
        return sum(int(total.replace(",", "")) for total in totals)

    def window(self, work: Callable[[], None]) -> tuple[int, float]:
        """(instructions, seconds) of the process while ``work`` runs."""
        self.zero()
        started = time.monotonic()
        work()
        seconds = time.monotonic() - started
        return self.read(), seconds

    def idle(self, seconds: float) -> int:
        """Instructions of ``seconds`` without work: the process's own timers."""
        self.zero()
        time.sleep(seconds)
        return self.read()


def per_call(
    counter: Counter, calls: int, run: Callable[[], None], repeats: int
) -> dict[str, object]:
    """Instructions per call of ``run`` (``calls`` calls), counted ``repeats`` times.

    The least of the counts is the one reported: what else the process may run during
    a window (a timer that fires) only adds instructions. Each window is followed by an
    idle one as long, whose count (per call) says how much such background there is.
    """
    counts: list[float] = []
    idle: list[float] = []
    for _ in range(repeats):
        busy, seconds = counter.window(run)
        counts.append(busy / calls)
        idle.append(counter.idle(seconds) / calls)
    return {
        "instructions_per_call": round(min(counts)),
        "instructions_per_call_runs": [round(count) for count in counts],
        "idle_per_call": [round(quiet) for quiet in idle],
    }


_COST_LINE = re.compile(r"^[0-9+\-*]")
_NAMED = re.compile(r"^\((\d+)\)(?: (.*))?$")


def instructions_by_object(path: str) -> dict[str, int]:
    """The instructions a callgrind output file counts in each object (the program and
    each shared library, by file name), from each function's own cost: what the code
    of that object executed itself, not what it called."""
    names: dict[str, str] = {}
    found: dict[str, int] = {}
    positions, column = 1, 0
    current = "?"
    call_cost_next = False
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if _COST_LINE.match(line):
                if call_cost_next:  # the cost of a call: the callee's, counted there
                    call_cost_next = False
                    continue
                fields = line.split()
                if len(fields) > positions + column:
                    found[current] = found.get(current, 0) + int(fields[positions + column])
                continue
            key, _, value = line.rstrip("\n").partition("=")
            if key == "ob":
                named = _NAMED.match(value)
                if named is None:
                    current = value.rsplit("/", 1)[-1]
                else:
                    ident, name = named.groups()
                    if name is not None:
                        names[ident] = name.rsplit("/", 1)[-1]
                    current = names.get(ident, "?")
            elif key == "cob":
                named = _NAMED.match(value)
                if named is not None and named.group(2) is not None:
                    names[named.group(1)] = named.group(2).rsplit("/", 1)[-1]
            elif key == "calls":
                call_cost_next = True
            elif line.startswith("positions:"):
                positions = len(line.split()) - 1
            elif line.startswith("events:"):
                column = line.split()[1:].index("Ir")
    return found
