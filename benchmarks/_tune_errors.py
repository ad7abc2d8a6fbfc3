"""The failed trials of a Tune run, for the benchmarks' standalone Tune scripts (torch-free)."""

from __future__ import annotations

from typing import Any


def failed_trials(results: Any) -> list:
    """The failed results of a ResultGrid, the first three printed with their error's last line."""
    errors = [r for r in results if r.error is not None]
    for r in errors[:3]:
        text = str(r.error).strip()
        print(f"  failed: {text.splitlines()[-1] if text else type(r.error).__name__}")
    return errors
