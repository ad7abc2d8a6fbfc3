"""Provenance: what produced a run, recorded in RUN/run.json and shown in the report's Run section.

Each `gumbel-study run` (and each `--resume` of it) and each `gumbel-study train` appends one
session to run.json:

    spec_text, spec_path   the spec as given (the file's text)
    argv                   the command line (with its --set overrides)
    revision               the project's git revision (+ "-dirty" with uncommitted changes), or
                           the installed package version outside a checkout
    python, torch, ray, cuda   versions (ray None for `train`, cuda None without a CUDA build)
    resources              the cluster's resources (Ray's view), or this machine's CPUs / GPUs
    started                UTC time

Per trial, the host and device are in the trial record (study.record.write_host). Nothing here
imports ray: the Ray version and resources are passed in by study.sweep.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["RUN_FILE", "append_session", "session_info"]

RUN_FILE = "run.json"
_PROJECT = Path(__file__).resolve().parents[1]


def _git_revision() -> str | None:
    """HEAD of the checkout this package runs from, or None outside one."""
    if not (_PROJECT / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(_PROJECT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(_PROJECT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _package_version() -> str | None:
    try:
        return metadata.version("gumbel-study")
    except metadata.PackageNotFoundError:
        return None


def local_resources() -> dict[str, float]:
    """This machine's CPUs and GPUs, for runs without Ray."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def session_info(
    spec_path: str,
    *,
    ray_version: str | None = None,
    resources: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Everything the module docstring lists, for the session starting now."""
    import torch

    try:
        spec_text = Path(spec_path).read_text()
    except OSError:
        spec_text = None
    revision = _git_revision()
    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": list(sys.argv),
        "spec_path": spec_path,
        "spec_text": spec_text,
        "revision": revision or f"gumbel-study {_package_version() or 'unknown version'}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray_version,
        "cuda": torch.version.cuda,
        "host": platform.node(),
        "resources": resources if resources is not None else local_resources(),
    }


def merge_session(previous_text: str | None, session: dict[str, Any]) -> str:
    """run.json's new text: the earlier sessions (if the file held any) and this one."""
    sessions: list[dict] = []
    if previous_text:
        try:
            sessions = list(json.loads(previous_text).get("sessions", []))
        except (ValueError, AttributeError):
            sessions = []
    return json.dumps({"sessions": [*sessions, session]}, indent=2) + "\n"


def append_session(directory: str | Path, session: dict[str, Any]) -> str:
    """Add `session` to DIRECTORY/run.json; DIRECTORY is a local path or a cloud URI."""
    import pyarrow.fs as pafs

    directory = str(directory)
    if "://" in directory:
        fs, root = pafs.FileSystem.from_uri(directory)
    else:
        fs, root = pafs.LocalFileSystem(), str(Path(directory).resolve())
    fs.create_dir(root, recursive=True)
    path = f"{root.rstrip('/')}/{RUN_FILE}"
    try:
        with fs.open_input_stream(path) as stream:
            previous = stream.read().decode()
    except FileNotFoundError:
        previous = None
    text = merge_session(previous, session).encode()
    tmp = f"{root.rstrip('/')}/.{RUN_FILE}.{os.getpid()}.tmp"
    with fs.open_output_stream(tmp) as stream:
        stream.write(text)
    fs.move(tmp, path)
    return path
