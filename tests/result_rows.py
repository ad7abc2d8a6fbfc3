"""Rows of a Tune result.json that may still be being written."""

from __future__ import annotations

import json
from pathlib import Path


def result_rows(path: Path) -> list[dict]:
    """The JSON rows of `path` ([] if it does not exist). Only newline-terminated lines count: a
    test that polls a running study can read a line that Tune is still writing."""
    text = path.read_text() if path.exists() else ""
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]
