"""Where a load run's CPU goes, by process: our gunicorn workers, PostgreSQL, Redis, the load generator, the rest.

The HTTP targets are measured on one 2-core machine that runs the app, PostgreSQL, Redis and wrk together, so a
target's throughput is set by how much CPU one of its requests costs *all of them*. Read before and after each
target, the CPU time of each process tree (a tree's root counts the children it has reaped, so a worker that
exits during the run is not lost) divided by the requests served is that cost, per process: the ratio of a target
to the bare route is then explained by milliseconds of CPU per request, named by who spends them.
"""
from __future__ import annotations

import contextlib
import resource
import time
from dataclasses import dataclass

import psutil

GROUPS = ("app", "postgres", "redis", "wrk", "other")
LABELS = {"app": "gunicorn (app or bare route)", "postgres": "PostgreSQL", "redis": "Redis", "wrk": "wrk",
          "other": "rest of the machine"}


def _own(process: psutil.Process, reaped: bool) -> float:
    times = process.cpu_times()
    return times.user + times.system + ((times.children_user + times.children_system) if reaped else 0.0)


def tree_cpu(root: psutil.Process) -> float:
    """CPU seconds of `root` and every live descendant, plus the descendants `root` has reaped."""
    try:
        total = _own(root, reaped=True)
        children = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    for child in children:
        # One that exits between the listing and the read: its time moves to its parent's reaped children.
        with contextlib.suppress(psutil.NoSuchProcess):
            total += _own(child, reaped=False)
    return total


def roots_named(name: str) -> list[psutil.Process]:
    """The processes called `name` whose parent is called something else (PostgreSQL's postmaster, redis-server)."""
    found = []
    for process in psutil.process_iter(["name", "ppid"]):
        if process.info["name"] != name:
            continue
        try:
            parent = psutil.Process(process.info["ppid"]).name() if process.info["ppid"] else ""
        except psutil.NoSuchProcess:
            parent = ""
        if parent != name:
            found.append(process)
    return found


def _busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle, over all cores."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


@dataclass
class Snapshot:
    """CPU seconds per group at one moment, and the wall clock."""

    wall: float
    busy: float
    groups: dict[str, float]


class CpuAccount:
    """Snapshots of the CPU of the server under test, PostgreSQL, Redis and our own reaped children (wrk)."""

    def __init__(self, server_pid: int):
        self.server = psutil.Process(server_pid)
        self.postgres = roots_named("postgres")
        self.redis = roots_named("redis-server")

    def snapshot(self) -> Snapshot:
        """Read every group's CPU time now."""
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once run_wrk has waited for it
        return Snapshot(
            wall=time.monotonic(), busy=_busy_seconds(),
            groups={"app": tree_cpu(self.server), "postgres": sum(tree_cpu(p) for p in self.postgres),
                    "redis": sum(tree_cpu(p) for p in self.redis),
                    "wrk": children.ru_utime + children.ru_stime})


def per_request(before: Snapshot, after: Snapshot, requests: int) -> dict:
    """CPU ms per request of each group between two snapshots, the machine's total, and how busy the cores were."""
    spent = {name: max(0.0, after.groups[name] - before.groups[name]) for name in before.groups}
    busy = max(0.0, after.busy - before.busy)
    spent["other"] = max(0.0, busy - sum(spent.values()))
    wall = max(after.wall - before.wall, 1e-9)
    n = max(requests, 1)
    return {"ms": {name: spent[name] * 1000 / n for name in GROUPS}, "total_ms": busy * 1000 / n,
            "cores_busy": busy / wall, "cores": psutil.cpu_count() or 1}


def markdown(rows: list[tuple[str, float, dict]]) -> list[str]:
    """A table of CPU ms per request by group, one row per (label, req/s, per_request figures)."""
    head = " | ".join(LABELS[g] for g in GROUPS)
    lines = [f"| target | req/s | {head} | all | cores busy |", "|---" * (len(GROUPS) + 4) + "|"]
    for label, rps, cpu in rows:
        cells = " | ".join(f"{cpu['ms'][g]:.2f}" for g in GROUPS)
        lines.append(f"| {label} | {rps:,.0f} | {cells} | {cpu['total_ms']:.2f} | "
                     f"{cpu['cores_busy']:.2f} of {cpu['cores']} |")
    return lines
