"""What disturbed a measurement: CPU taken by other processes, and load spread unevenly over the workers.

Two things make a wrk run on this 2-core machine say little about the server under test:

- others' load: a test suite or a type check of another session may start at any time;
- accept imbalance: the uvicorn workers share one listening socket, and whichever worker wakes first
  accepts the burst of connections wrk opens at start, sometimes all of them. Keep-alive keeps them
  there, so such a run measures one worker while the other idles (often less than half the
  throughput). Clients that connect over time spread evenly; an unlucky run is not the server's speed.

A `Window` reads, before and after a run, the machine's busy CPU time (/proc/stat), the CPU time of
each process in the server's process group, and that of waited-for children (wrk). `foreign_cores` is
the machine's busy time not spent by the bench, per second; `balance` is the least busy worker's CPU
time over the busiest's (1.0 even, 0.0 one worker did everything); `server_seconds` is the CPU time
the server's processes spent, which divided by the requests served is a cost per request that is far
less sensitive to the machine's noise than throughput.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle since boot (steal included: another VM's load)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS


def _group_seconds(group: int) -> dict[int, float]:
    """CPU seconds used so far by each live process of process group `group`, by pid."""
    found: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == group:  # pgrp
            found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
    return found


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Window:
    """`with Window(group, workers) as w: run()`, then `w.foreign_cores` and `w.balance`."""

    def __init__(self, group: int, workers: int) -> None:
        self.group = group
        self.workers = workers
        self.foreign_cores = 0.0
        self.balance = 1.0
        self.server_seconds = 0.0

    def __enter__(self) -> Window:
        self._start = (time.monotonic(), _busy_seconds(), _group_seconds(self.group), _children_seconds())
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, busy0, group0, kids0 = self._start
        wall = time.monotonic() - wall0
        group1 = _group_seconds(self.group)
        spent = {pid: group1[pid] - group0.get(pid, 0.0) for pid in group1}
        self.server_seconds = sum(spent.values())
        ours = self.server_seconds + (_children_seconds() - kids0)  # this script itself idles meanwhile
        self.foreign_cores = max(0.0, (_busy_seconds() - busy0 - ours) / wall) if wall > 0 else 0.0
        # The busiest `workers` processes are the workers (the supervisor and helpers barely run).
        busiest = sorted(spent.values(), reverse=True)[: self.workers]
        if len(busiest) == self.workers and busiest[0] > 0:
            self.balance = busiest[-1] / busiest[0]
