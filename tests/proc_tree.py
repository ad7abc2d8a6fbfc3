"""The processes a test started, read from Linux /proc (to signal or inspect only those)."""

from __future__ import annotations

from pathlib import Path


def process_tree(root: int) -> dict[int, str]:
    """{pid: command name} for root and every live process below it."""
    parent, name = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            parent[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):  # exited while we looked
            continue
        name[int(entry.name)] = stat[stat.index("(") + 1:stat.rindex(")")]
    found, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, ppid in parent.items() if ppid in frontier and pid not in found]
        found.update(children)
        frontier = children
    return {pid: name.get(pid, "?") for pid in found}
