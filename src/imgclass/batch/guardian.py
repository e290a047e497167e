"""The guardian of a local Ray that imgclass starts: a small process that kills every process of that
Ray once its driver is gone, however it went (a SIGKILL included).

Ray ties the processes the driver starts to it (PR_SET_PDEATHSIG), but the raylet's two agents
(``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) outlive a killed raylet by a minute or more, about
170 MB, ignoring SIGTERM: they block reporting the raylet's death to the GCS, which died with it.

The driver starts this script, before ``ray.init``, with a pipe on its stdin. Until the pipe ends (the
driver closed it or died), the guardian notes every POLL_S the processes of the driver's Ray: the
driver's children that run Ray's programs, and their descendants (the agents, the workers). Then it
SIGKILLs those still alive (the same process: same start time) until none is left. Only these: never
another process of the driver, nor another Ray. Ray's agents rewrite their command line and environment
(setproctitle), so the parent chain, not a mark they inherit, is what finds them; a process born and
orphaned within the last POLL_S before the driver died can escape. Linux only (``/proc``). Run as a
script: it needs the standard library alone, so it starts in milliseconds.

Usage: ``python guardian.py RAY_PACKAGE_DIR`` (stdin: the driver's pipe; the driver: its parent).
"""
from __future__ import annotations

import os
import select
import signal
import sys
import time

POLL_S = 0.5
SWEEP_S = 10.0  # a bound: processes may still be forking while the first sweeps run


def processes() -> dict[int, tuple[int, int, str]]:
    """Every live process (zombies left out): pid -> (parent pid, start time, command line)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        fields = stat.rpartition(b")")[2].split()  # the name before it may hold spaces
        if fields[0] != b"Z":
            table[int(entry)] = (int(fields[1]), int(fields[19]), cmdline)
    return table


def descendants(roots: set[int], table: dict[int, tuple[int, int, str]]) -> set[int]:
    """The children of ``roots``, theirs, and so on."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def ray_processes(driver: int, ray_dir: str, table: dict[int, tuple[int, int, str]]) -> dict[int, int]:
    """The processes of the driver's Ray, pid -> start time: its children that run Ray's programs (GCS,
    raylet, monitors), and their descendants; not this one (``ray_dir`` is in its command line too)."""
    ours = {pid for pid, (ppid, _, cmdline) in table.items()
            if ppid == driver and pid != os.getpid() and (ray_dir in cmdline or cmdline.startswith("ray::"))}
    return {pid: table[pid][1] for pid in ours | descendants(ours, table)}


def watch(driver: int, ray_dir: str) -> dict[int, int]:
    """The processes of the driver's Ray seen until stdin ends, pid -> start time."""
    seen: dict[int, int] = {}
    while True:
        seen.update(ray_processes(driver, ray_dir, processes()))
        ready, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            return seen


def sweep(seen: dict[int, int], bound_s: float = SWEEP_S) -> None:
    """SIGKILL the processes of ``seen`` still alive, and their descendants, until none is left (or
    ``bound_s`` has passed)."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        table = processes()
        alive = {pid for pid, start in seen.items() if pid in table and table[pid][1] == start}
        targets = alive | descendants(alive, table)
        if not targets:
            return
        for pid in targets:
            seen.setdefault(pid, table[pid][1])
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


if __name__ == "__main__":
    sweep(watch(os.getppid(), sys.argv[1]))
