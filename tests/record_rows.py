"""Rows of a trial record (study.record) as plain dicts, for tests that check what a trial wrote."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq


def record_rows(trial_dir: Path, kind: str = "evals") -> list[dict]:
    """Every row of TRIAL/record/<kind>-*.parquet, files in step order ([] before the first)."""
    files = sorted((Path(trial_dir) / "record").glob(f"{kind}-*.parquet"))
    return [row for path in files for row in pq.read_table(path).to_pylist()]


def trial_dirs(experiment: Path) -> list[Path]:
    return sorted(p for p in Path(experiment).iterdir() if p.is_dir() and p.name.startswith("trainable"))
