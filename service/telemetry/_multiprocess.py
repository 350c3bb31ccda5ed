"""Metrics of several worker processes served as one.

prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) covers the metrics
counted per event (gRPC, builds, Solana requests, ...): each process writes its own
memory-mapped files and the scrape adds them up. It cannot cover what is read from
``stats()`` at scrape time, which lives in each process's memory. For those, each
process publishes a snapshot of its scrape-time families into the same directory,
``snapshot_<pid>.json``, every few seconds and when it stops; the scrape merges them:

- counters and histograms: summed over every snapshot, those of processes that have
  exited included (their last counts stay, so sums never go down when a worker is
  replaced);
- gauges, by the family's mode: ``pid`` keeps one series per live process with a
  ``pid`` label (Solana endpoint health and breakers, process metrics), ``sum`` adds
  the live processes up (transactions in flight, watchers), ``max``/``min`` keep the
  worst (blockhash age, keys overdue for rotation, backend health).

A process is live while its snapshot is fresh (written within ``stale_after``
seconds) and it has not written its final one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

PREFIX: Final = "snapshot_"


def write_snapshot(
    directory: Path,
    families: Iterable[Metric],
    modes: dict[str, str],
    *,
    live: bool = True,
    pid: int | None = None,
) -> None:
    """Write this process's families (atomically: readers never see half a file)."""
    pid = os.getpid() if pid is None else pid
    body = {
        "pid": pid,
        "time": time.time(),
        "live": live,
        "families": [
            {
                "name": family.name,
                "documentation": family.documentation,
                "type": family.type,
                "mode": modes.get(
                    family.name, "sum" if family.type in ("counter", "histogram") else "pid"
                ),
                "samples": [[s.name, s.labels, s.value] for s in family.samples],
            }
            for family in families
        ],
    }
    path = directory / f"{PREFIX}{pid}.json"
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(body, separators=(",", ":")))
    partial.replace(path)


def read_snapshots(directory: Path) -> list[dict[str, Any]]:
    """Every process's last snapshot (unreadable ones skipped)."""
    snapshots = []
    for path in sorted(directory.glob(f"{PREFIX}*.json")):
        try:
            snapshots.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # removed or replaced meanwhile
    return snapshots


class SnapshotCollector(Collector):
    """Merges the snapshots of every process (see the module docstring)."""

    def __init__(self, directory: Path, *, stale_after: float) -> None:
        self._directory = directory
        self._stale_after = stale_after

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        merged: dict[str, tuple[Metric, str]] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]] = {}
        for snapshot in read_snapshots(self._directory):
            live = bool(snapshot.get("live")) and now - snapshot["time"] < self._stale_after
            pid = str(snapshot["pid"])
            for family in snapshot["families"]:
                name, kind, mode = family["name"], family["type"], family["mode"]
                if kind in ("counter", "histogram") and mode != "pid":
                    mode = "sum"
                elif not live:
                    continue
                if name not in merged:
                    merged[name] = (Metric(name, family["documentation"], kind), mode)
                    values[name] = {}
                for sample_name, labels, value in family["samples"]:
                    if mode == "pid":
                        labels = {**labels, "pid": pid}
                    key = (sample_name, tuple(sorted(labels.items())))
                    values[name].setdefault(key, []).append(float(value))
        for name, (metric, mode) in merged.items():
            combine = _COMBINE.get(mode, sum)
            for (sample_name, labels), found in values[name].items():
                metric.add_sample(sample_name, dict(labels), combine(found))
            yield metric


_COMBINE: Final[dict[str, Callable[[list[float]], float]]] = {"sum": sum, "max": max, "min": min}
