"""How much memory this process may still take: the machine's, or its container's if smaller."""

from __future__ import annotations

from pathlib import Path

import psutil

CGROUP = Path("/sys/fs/cgroup")

# (limit, usage, stat file, the stat line of file pages the kernel reclaims first), v2 then v1.
_LAYOUTS = (("memory.max", "memory.current", "memory.stat", "inactive_file"),
            ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "memory/memory.stat",
             "total_inactive_file"))


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_room(root: Path) -> int | None:
    """Limit minus the working set of the container's memory cgroup (v2, else v1), if there is a limit.

    The cgroup's usage counts the page cache, which fills to the limit on a busy machine and is
    given back on demand: the working set (usage minus inactive file pages, what the kubelet and
    ``docker stats`` report) is what cannot be reclaimed. Inside a container the cgroup namespace
    puts its own cgroup at the mount's root. v1 writes "no limit" as a huge number, which the
    caller's ``min`` with the machine's memory absorbs.
    """
    for limit_file, used_file, stat_file, reclaimable in _LAYOUTS:
        try:
            limit = (root / limit_file).read_text().strip()
            used = int((root / used_file).read_text())
        except (OSError, ValueError):
            continue
        if limit == "max":
            return None
        working_set = max(0, used - _stat(root / stat_file, reclaimable))
        return max(0, int(limit) - working_set)
    return None


def available_bytes(cgroup_root: Path = CGROUP) -> int:
    """Bytes that can still be allocated: the machine's available memory, capped by a container limit."""
    machine = psutil.virtual_memory().available
    room = _cgroup_room(cgroup_root)
    return machine if room is None else min(machine, room)
