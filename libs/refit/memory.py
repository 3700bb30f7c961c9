"""How much memory this process may still take: the machine's, or its container's if smaller."""

from __future__ import annotations

from pathlib import Path

import psutil

CGROUP = Path("/sys/fs/cgroup")


def _cgroup_room(root: Path) -> int | None:
    """Limit minus usage of the container's memory cgroup (v2, else v1), if there is a limit.

    Inside a container the cgroup namespace puts its own cgroup at the mount's root. v1 writes
    "no limit" as a huge number, which the caller's ``min`` with the machine's memory absorbs.
    """
    for limit_file, used_file in (("memory.max", "memory.current"),
                                  ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            limit = (root / limit_file).read_text().strip()
            used = int((root / used_file).read_text())
        except (OSError, ValueError):
            continue
        return None if limit == "max" else max(0, int(limit) - used)
    return None


def available_bytes(cgroup_root: Path = CGROUP) -> int:
    """Bytes that can still be allocated: the machine's available memory, capped by a container limit."""
    machine = psutil.virtual_memory().available
    room = _cgroup_room(cgroup_root)
    return machine if room is None else min(machine, room)
