"""Timing helpers shared by the benchmarks (torch only: gpu.py must run where Ray is absent).

- Import path: `python benchmarks/X.py` puts benchmarks/ first on sys.path; each script starts
  with a three-line preamble that puts the repository root there instead, so `benchmarks.common`
  and `study` import the same way as under `python -m benchmarks.X`.
- `Timing` / `measure()`: warm-up calls, then several repeats of `number` calls each, timed with
  time.perf_counter; the median per-call time is what the ratios use (robust on a busy machine).
- `autonumber()`: how many calls make one repeat last about `target_s`.
- `matmul_peak_gflops()`: this machine's float32 sgemm rate (n x n @ n x n, 2 n^3 FLOPs each),
  the best of several repeats, with all threads: the denominator of "share of peak".
- `print_table()`: a plain fixed-width table.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent  # benchmarks/
ROOT = HERE.parent  # the repository root


# ---------------------------------------------------------------------- threads and devices


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[int]:
    """Temporarily run torch's intra-op pool with n threads (None: leave as is)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which containers narrow), else cpu_count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def sync(device: torch.device | str | None) -> None:
    """Wait for queued kernels, so that a CUDA timing covers the work and not only its launch."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Per-call seconds of each repeat; `median` is what ratios use."""

    number: int  # calls per repeat
    per_call: list[float] = field(default_factory=list)  # seconds per call, one entry per repeat

    @property
    def median(self) -> float:
        return statistics.median(self.per_call)

    @property
    def best(self) -> float:
        return min(self.per_call)

    @property
    def spread(self) -> float:
        """(max - min) / median over the repeats: how noisy the measurement was."""
        return (max(self.per_call) - min(self.per_call)) / self.median if self.median > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "median_s": self.median, "best_s": self.best, "spread": self.spread, "per_call_s": self.per_call}


def measure(
    fn: Callable[[], Any],
    *,
    number: int = 1,
    repeats: int = 5,
    warmup: int = 1,
    device: torch.device | str | None = None,
) -> Timing:
    """`warmup` untimed calls, then `repeats` timings of `number` back-to-back calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    timing = Timing(number=number)
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(number):
            fn()
        sync(device)
        timing.per_call.append((time.perf_counter() - start) / number)
    return timing


def autonumber(
    fn: Callable[[], Any],
    target_s: float,
    *,
    device: torch.device | str | None = None,
    minimum: int = 1,
    maximum: int = 1_000_000,
) -> int:
    """Calls per repeat so that a repeat takes about `target_s` (fn is called a few times here)."""
    fn()  # warm-up: first-call costs (allocations, lazy init) are not the steady state
    sync(device)
    n, elapsed = 1, 0.0
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= 0.2 * target_s or n >= maximum:
            break
        n *= 4
    per_call = max(elapsed / n, 1e-9)
    return int(min(maximum, max(minimum, round(target_s / per_call))))


def matmul_peak_gflops(
    *,
    n: int = 2048,
    repeats: int = 5,
    device: torch.device | str = "cpu",
    threads: int | None = None,
    target_s: float = 0.5,
) -> dict[str, Any]:
    """Float32 sgemm rate of this machine: best of `repeats` timings of n x n @ n x n.

    One matmul is 2 n^3 FLOPs (n^3 multiply-adds). CPU: all cores by default (`threads` None
    uses every available CPU). CUDA: TF32 stays off (torch's default for matmul), so this is the
    true float32 rate that the population's float32 bmm competes against.
    """
    device = torch.device(device)
    threads = threads or available_cpus()
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=gen, device=device)  # ~N(0, 1), [n, n]
    b = torch.randn(n, n, generator=gen, device=device)  # ~N(0, 1), [n, n]
    out = torch.empty(n, n, device=device)
    with num_threads(threads if device.type == "cpu" else None) as used:
        fn = lambda: torch.mm(a, b, out=out)  # noqa: E731
        number = autonumber(fn, target_s, device=device)
        timing = measure(fn, number=number, repeats=repeats, warmup=1, device=device)
    flops = 2.0 * n**3
    return {
        "gflops": flops / timing.best / 1e9,
        "gflops_median": flops / timing.median / 1e9,
        "n": n,
        "threads": used if device.type == "cpu" else None,
        "device": str(device),
        "timing": timing.to_dict(),
    }


# ---------------------------------------------------------------------- reporting


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "available_cpus": available_cpus(),
        "torch_threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with contextlib.suppress(OSError, AttributeError):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]  # busy machine: noisy numbers
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else ("yes" if value else "NO")
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:,.0f}"
        return f"{value:.{digits - 1}e}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, *, title: str | None = None, file=None) -> None:
    """Rows of dicts as a fixed-width table; `columns` picks and orders the keys."""
    file = file or sys.stdout
    if not rows:
        return
    columns = list(columns or rows[0].keys())
    cells = [[fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    if title:
        print(title, file=file)
    # text columns left-aligned, numbers right-aligned
    left = [all(isinstance(row.get(c), str) for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if lj else v.rjust(w) for v, w, lj in zip(values, widths, left)).rstrip()

    print(line(columns), file=file)
    print(line(["-" * w for w in widths]), file=file)
    for r in cells:
        print(line(r), file=file)
    file.flush()


def goal_line(name: str, value: float, goal: float, unit: str = "x", *, higher_is_better: bool = True) -> str:
    met = value >= goal if higher_is_better else value <= goal
    op = ">=" if higher_is_better else "<="
    return f"goal {name}: {op} {goal:g}{unit}; measured {fmt(value)}{unit} -> {'met' if met else 'NOT met'}"


def finish(result: dict[str, Any], json_path: str | os.PathLike | None, print_result: Callable[[dict], None]) -> int:
    """A benchmark's last steps: note the machine, print the result, write it as JSON; exit 0."""
    result["machine"] = machine_info()
    print_result(result)
    write_json(json_path, result)
    return 0


def proc_bytes(pid: int, file: str, key: str) -> int:
    """A `key:  N kB` line of /proc/PID/FILE (status: VmHWM, VmRSS; smaps_rollup: Pss), in bytes;
    0 when the process is gone or the line is absent."""
    try:
        with open(f"/proc/{pid}/{file}") as fh:
            for line in fh:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def tree_members(parents: dict[int, int], sessions: dict[int, int], root: int) -> set[int]:
    """root, every live process below it (parents: pid -> ppid) and every process of the session
    root leads (sessions: pid -> sid; Ray's processes leave the tree): what root started."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid in found or pid not in parents:
            continue
        found.add(pid)
        stack.extend(children.get(pid, []))
    return found | {pid for pid, sid in sessions.items() if sid == root}


def write_json(path: str | os.PathLike | None, data: Any) -> None:
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)
