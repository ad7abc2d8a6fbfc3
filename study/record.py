"""The trial record: every seed's every metric and every probe, as columnar files in the trial's
own directory. `gumbel-study train` and a Tune trial write the same record; analysis reads it.

    TRIAL/params.json                    the flat trial config (TrialConfig fields, `seeds`, ...)
    TRIAL/record/evals-<step>.parquet    one row per seed: seed, step, time_s, diverged, the
                                         scalar metrics of vocab.EVAL_KEYS, fit/probs (list)
    TRIAL/record/probes-<step>.parquet   one row per seed x estimator x probed tau: seed, step,
                                         estimator, source ("current" | "ladder"), tau, and
                                         vocab.PROBE_STATS
    TRIAL/record/host-<step>.json        where the trial ran from `step` on: host, device, GPU
    TRIAL/record/pbt-<step>.json         PBT: from `step` on, the trial's mutable fields (new) and
                                         the temperature its schedule starts from (tau_anchor); at
                                         step 0 its own, later the perturbed values of the checkpoint
                                         it continued from (donor, donor_dir; its values: old)

One file per evaluation step, written when the evaluation ends (so a trial stopped early by a
scheduler keeps every row it reported), to a temporary name and renamed, so that a reader never sees
half a file. A restored trial evaluates again the steps after its checkpoint and rewrites their
files whole: no row is lost or counted twice, whatever kills the trial and however often it
resumes. <step> is zero-padded so that names sort by step.

Probe statistics and learned probabilities are float32: their Monte Carlo error is many orders
above float32 rounding. Floats are stored byte-stream-split (zstd then compresses their exponent
bytes), the rest dictionary-encoded, without column statistics: a third fewer bytes than
parquet's defaults, and faster to write.
"""

from __future__ import annotations

import json
import os
import platform
import socket
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from study.evaluation import Evaluation
from study.vocab import EVAL_KEYS, PROBE_STATS

__all__ = ["RECORD_DIR", "drop_exploits_after", "evals_table", "probes_table", "write_evaluation", "write_exploit", "write_host", "write_params"]

RECORD_DIR = "record"
PARAMS_FILE = "params.json"
_STEP_DIGITS = 9


def _name(kind: str, step: int, suffix: str) -> str:
    return f"{kind}-{step:0{_STEP_DIGITS}d}.{suffix}"


def _atomic_write(path: Path, write) -> None:
    """`write(tmp_path)`, then rename onto `path`: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def evals_table(evaluation: Evaluation, time_s: float) -> pa.Table:
    """One row per seed, in seed order."""
    order = sorted(range(len(evaluation.seeds)), key=evaluation.seeds.__getitem__)
    index = torch.tensor(order)
    columns: dict[str, pa.Array] = {
        "seed": pa.array([evaluation.seeds[r] for r in order], pa.int64()),
        "step": pa.array([evaluation.step] * len(order), pa.int64()),
        "time_s": pa.array([float(time_s)] * len(order), pa.float64()),
        "diverged": pa.array(evaluation.diverged.cpu()[index].tolist(), pa.bool_()),
    }
    for key in EVAL_KEYS:
        columns[key] = pa.array(evaluation.metrics[key].detach().cpu()[index].double().numpy(), pa.float64())
    probs = evaluation.probs.detach().cpu()[index].float().numpy()  # [R, K]
    columns["fit/probs"] = pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1), pa.float32()), probs.shape[1])
    return pa.table(columns)


def probes_table(evaluation: Evaluation) -> pa.Table:
    """One row per seed x probe (estimator, source, tau), probes in the order measured."""
    probes, n = evaluation.probes, len(evaluation.seeds)
    if not probes:
        return pa.table({"seed": pa.array([], pa.int64())})

    def stacked(values) -> torch.Tensor:  # each probe's [R] values, one after the other
        return torch.cat([v.detach().cpu() for v in values])

    columns: dict[str, pa.Array] = {
        "seed": pa.array(torch.tensor(evaluation.seeds).repeat(len(probes)).numpy(), pa.int64()),
        "step": pa.array([evaluation.step] * (n * len(probes)), pa.int64()),
        "estimator": pa.array([p.estimator for p in probes for _ in range(n)], pa.string()).dictionary_encode(),
        "source": pa.array([p.source for p in probes for _ in range(n)], pa.string()).dictionary_encode(),
        "tau": pa.array(stacked(p.tau for p in probes).double().numpy(), pa.float64()),
    }
    for stat in PROBE_STATS:
        values = stacked(p.stats[stat] for p in probes).float()
        columns[stat] = pa.array(values.round().int().numpy(), pa.int32()) if stat == "n" else pa.array(values.numpy(), pa.float32())
    return pa.table(columns)


def _write_parquet(table: pa.Table, path: Path) -> None:
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type) or pa.types.is_fixed_size_list(f.type)]
    others = [f.name for f in table.schema if f.name not in floats]

    def write(tmp: Path) -> None:
        pq.write_table(
            table, tmp, compression="zstd", use_byte_stream_split=floats, use_dictionary=others, write_statistics=False,
        )

    _atomic_write(path, write)


def write_evaluation(directory: str | Path, evaluation: Evaluation, time_s: float) -> None:
    """Write one evaluation's per-seed rows and probe rows into DIRECTORY/record."""
    record = Path(directory) / RECORD_DIR
    _write_parquet(evals_table(evaluation, time_s), record / _name("evals", evaluation.step, "parquet"))
    if evaluation.probes:
        _write_parquet(probes_table(evaluation), record / _name("probes", evaluation.step, "parquet"))


def write_params(directory: str | Path, params: dict[str, Any]) -> None:
    """The flat trial config, as Tune writes it for its trials (`gumbel-study train` uses this)."""
    text = json.dumps(params, indent=2, sort_keys=True) + "\n"
    _atomic_write(Path(directory) / PARAMS_FILE, lambda tmp: tmp.write_text(text))


def device_description(device: torch.device) -> dict[str, Any]:
    """The device a trial computes on, with the GPU's name when it is one."""
    out: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        out["gpu"] = torch.cuda.get_device_name(index)
    else:
        out["cpu"] = platform.processor() or platform.machine()
        out["threads"] = torch.get_num_threads()
    return out


def write_host(directory: str | Path, step: int, device: torch.device) -> None:
    """Where the trial runs from `step` on (a resumed trial may move to another node)."""
    info = {"host": socket.gethostname(), "pid": os.getpid(), "from_step": step, **device_description(device)}
    text = json.dumps(info, indent=2) + "\n"
    _atomic_write(Path(directory) / RECORD_DIR / _name("host", step, "json"), lambda tmp: tmp.write_text(text))


def write_exploit(directory: str | Path, step: int, exploit: dict[str, Any]) -> None:
    """A PBT lineage entry: from `step` on, the trial's mutable values and where they came from."""
    text = json.dumps({"step": int(step), **exploit}, indent=2) + "\n"
    _atomic_write(Path(directory) / RECORD_DIR / _name("pbt", step, "json"), lambda tmp: tmp.write_text(text))


def drop_exploits_after(directory: str | Path, step: int) -> None:
    """A trial restored at `step` trains its later steps again: lineage entries after it are void
    (its evaluation files after `step` are rewritten as it goes)."""
    for path in (Path(directory) / RECORD_DIR).glob("pbt-*.json"):
        if int(path.stem.split("-")[1]) > step:
            path.unlink(missing_ok=True)
