"""GPU: population replica-steps/s for R up to 4096 vs one replica on the same GPU, and batched probes.

    python benchmarks/gpu.py [--device cuda] [--replicas 1,16,256,1024,4096] [--categories 10]
                             [--cell-seconds 2] [--budget-s 240] [--eval-categories 10,100]
                             [--no-eval] [--threads N] [--small] [--json PATH]
    python benchmarks/gpu.py --device cpu --small          # smoke check without a GPU

Torch only: it imports study.population / study.config / study.estimators / study.gumbel and the
torch-only benchmark modules, never Ray, so it runs on a machine with nothing but torch (and this
checkout); the JSON records whether ray was imported. It finishes in under 5 minutes: cells stop
once --budget-s is spent (the skipped ones are listed).

Measured, on one device:
1. the device's float32 matmul rate (8192^3 sgemm on CUDA, TF32 off as torch defaults);
2. one replica: the plain torch.nn loop of benchmarks/population.py (PlainGAN), steps/s;
3. Population(cfg, seeds=range(R)) for each R (cfg as in benchmarks/population.py: K -> 64 -> 64
   -> 1, batch 256, soft, g_steps 1, uniform target): replica-steps/s, the speed-up over the
   population with R = 1 and over the plain loop, nominal matmul GFLOP/s and share of the peak;
4. probes: 1000 single-sample estimates in one estimate_gradients call vs a Python loop of 1000
   backward passes, soft / hard / gumbel_rao (benchmarks/probes.py, on the device);
5. evaluation cost at the tradeoff configuration (benchmarks/evaluation.py, --eval-categories,
   default 10,100): one training step per relaxation and one `Population.evaluate()` on the device,
   and evaluation's share of a 20,000-step, 21-evaluation trial (--no-eval skips it).

Without a CUDA device (and --device cuda) it prints why and exits 0 without measuring: nothing to
measure is not a failure. Prints tables; writes JSON to --json, and to $OUT/gpu.json when OUT is set.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/gpu.py`: benchmarks/ would shadow `study`
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import evaluation as evalbench
from benchmarks import population as popbench
from benchmarks import probes as probebench
from benchmarks.common import machine_info, matmul_peak_gflops, print_table, write_json


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def run(
    *,
    device: str,
    replicas=(1, 16, 256, 1024, 4096),
    categories=(10,),
    cell_s: float = 2.0,
    budget_s: float = 240.0,
    peak_n: int = 8192,
    probe_estimates: int = 1000,
    probe_repeats: int = 5,
    eval_categories=(10, 100),
    eval_seeds: int | None = None,
) -> dict:
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {msg}", file=sys.stderr, flush=True)

    def over_budget() -> bool:
        return time.perf_counter() - started > budget_s

    peak = matmul_peak_gflops(n=peak_n, device=device, target_s=0.3)
    log(f"matmul peak {peak['gflops']:.5g} GFLOP/s ({peak_n}^3 float32)")
    rows, skipped = [], []
    for K in categories:
        plain = popbench.plain_cell(K, cell_s=cell_s, device=device)
        log(f"plain single replica K={K}: {plain['rate']:.4g} steps/s")
        flops = popbench.flops_per_replica_step(K)
        base = None
        for R in replicas:
            if over_budget():
                skipped.append({"R": R, "K": K})
                log(f"skipped R={R} K={K}: budget of {budget_s:g} s spent")
                continue
            built = time.perf_counter()
            cell = popbench.population_cell(R, K, cell_s=cell_s, device=device)
            base = base or cell["rate"]  # the population with the first (smallest) R, normally 1
            achieved = flops["nominal"] * cell["rate"] / 1e9
            rows.append({
                "R": R,
                "K": K,
                "steps": cell["steps"],
                "rs_per_s": cell["rate"],
                "vs_R1": cell["rate"] / base,
                "vs_plain": cell["rate"] / plain["rate"],
                "gflops": achieved,
                "peak_pct": 100 * achieved / peak["gflops"],
                "cell_s": time.perf_counter() - built,
                "plain_rs_per_s": plain["rate"],
                "timing": cell["timing"],
            })
            log(f"population R={R} K={K}: {cell['rate']:.4g} replica-steps/s ({rows[-1]['vs_plain']:.3g}x plain)")
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    probes = None
    if not over_budget():
        probes = probebench.run(num_estimates=probe_estimates, device=device, repeats=probe_repeats, loop_repeats=2, verbose=False)
        log("probes done")
    else:
        log("skipped probes: budget spent")
    evaluation = []
    for K in eval_categories:
        if over_budget():
            skipped.append({"evaluation": True, "K": K})
            log(f"skipped evaluation cost K={K}: budget of {budget_s:g} s spent")
            continue
        evaluation.append(evaluation_cell(K, device=device, seeds=eval_seeds, step_seconds=min(cell_s, 3.0)))
        log(f"evaluation K={K}: eval {evaluation[-1]['eval_s']:.3g} s, share {100 * evaluation[-1]['share']:.3g}%")
    return {
        "benchmark": "gpu",
        "settings": {"device": device, "replicas": list(replicas), "categories": list(categories), "cell_seconds": cell_s, "budget_s": budget_s},
        "peak": peak,
        "rows": rows,
        "skipped": skipped,
        "probes": probes,
        "evaluation": evaluation,
        "wall_s": time.perf_counter() - started,
    }


def evaluation_cell(K: int, *, device: str, seeds: int | None = None, step_seconds: float = 2.0) -> dict:
    """benchmarks/evaluation.py's measurement in this process, on `device`: seconds per step for
    each relaxation, seconds per evaluation, and the evaluation share of the tradeoff trial."""
    fields = {rel: evalbench.trial_fields(categories=K, relaxation=rel)[0] for rel in evalbench.RELAXATIONS}
    n_seeds = seeds or evalbench.trial_fields(categories=K, relaxation="soft")[1]
    steps, evaluations = evalbench.trial_shape(fields["soft"])
    sync = (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None)
    measured = evalbench.measure_trial_cost(fields, n_seeds, device=device, step_seconds=step_seconds, evals=1, sync=sync)
    step_s = measured["step_s"]
    eval_s = min(measured["eval_s"])
    mean_step = sum(step_s.values()) / len(step_s)
    return {"K": K, "seeds": n_seeds, "eval_s": eval_s, "step_ms": {r: 1e3 * t for r, t in step_s.items()},
            "mean_step_ms": 1e3 * mean_step, "share": evalbench.share(eval_s, mean_step, steps, evaluations),
            "share_by_relaxation": {r: evalbench.share(eval_s, t, steps, evaluations) for r, t in step_s.items()}}


def print_result(result: dict) -> None:
    s = result["settings"]
    print_table(
        result["rows"],
        ["R", "K", "steps", "rs_per_s", "vs_R1", "vs_plain", "gflops", "peak_pct"],
        title=f"gpu population on {s['device']}: replica-steps/s (batch 256, K->64->64->1); matmul peak {result['peak']['gflops']:.5g} GFLOP/s",
    )
    print("vs_R1 = replica-steps/s over the population with the smallest R; vs_plain = over the plain torch.nn loop, one replica, same device")
    if result["skipped"]:
        print(f"skipped (time budget): {result['skipped']}")
    if result["probes"]:
        probebench.print_result(result["probes"])
    if result["evaluation"]:
        rows = [{**r, "share_pct": 100 * r["share"], "step_ms": ", ".join(f"{k} {v:.3g}" for k, v in r["step_ms"].items())}
                for r in result["evaluation"]]
        print_table(rows, ["K", "seeds", "eval_s", "step_ms", "mean_step_ms", "share_pct"],
                    title=f"evaluation cost at the tradeoff configuration on {s['device']} (benchmarks/evaluation.py)")
        print("share_pct = 21 E / (21 E + 20,000 T): evaluation's share of a tradeoff trial, T the mean step over the relaxations")
    print(f"total {result['wall_s']:.0f} s; ray imported: {result['ray_imported']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--replicas", type=_ints, default=[1, 16, 256, 1024, 4096])
    p.add_argument("--categories", type=_ints, default=[10])
    p.add_argument("--cell-seconds", type=float, default=2.0)
    p.add_argument("--budget-s", type=float, default=240.0, help="start no new cell after this many seconds")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's default)")
    p.add_argument("--eval-categories", type=_ints, default=[10, 100], help="K values of the evaluation-cost cells")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation-cost cells")
    p.add_argument("--small", action="store_true", help="smoke size: R 1,4,16, short cells, small matmul, a 4-seed evaluation at K 10")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu.py: skipped: no CUDA device visible (torch.cuda.is_available() is False); "
              "--device cpu --small runs a smoke check", file=sys.stderr)
        skipped = {"benchmark": "gpu", "skipped": "no CUDA device visible", "machine": machine_info()}
        write_json(args.json, skipped)
        if os.environ.get("OUT"):
            write_json(Path(os.environ["OUT"]) / "gpu.json", skipped)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    eval_seeds = None
    if args.small:
        args.replicas, args.cell_seconds = [1, 4, 16], 0.3
        args.eval_categories, eval_seeds = [10], 4
    peak_n = 1024 if args.small or not args.device.startswith("cuda") else 8192
    result = run(
        device=args.device, replicas=args.replicas, categories=args.categories, cell_s=args.cell_seconds,
        budget_s=args.budget_s, peak_n=peak_n, probe_estimates=1000, probe_repeats=2 if args.small else 5,
        eval_categories=[] if args.no_eval else args.eval_categories, eval_seeds=eval_seeds,
    )
    result["ray_imported"] = "ray" in sys.modules
    result["machine"] = machine_info()
    if torch.cuda.is_available():
        result["machine"]["cuda"] = torch.version.cuda
    print_result(result)
    write_json(args.json, result)
    if os.environ.get("OUT"):
        write_json(Path(os.environ["OUT"]) / "gpu.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
