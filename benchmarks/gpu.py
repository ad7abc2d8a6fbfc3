"""GPU: population replica-steps/s for R up to 4096 vs one replica on the same GPU, and batched probes.

    python benchmarks/gpu.py [--device cuda] [--replicas 1,16,256,1024,4096] [--categories 10]
                             [--cell-seconds 2] [--budget-s 240] [--threads N] [--small]
                             [--json PATH]
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
   backward passes, soft / hard / gumbel_rao (benchmarks/probes.py, on the device).

Prints tables; writes JSON to --json, and to $OUT/gpu.json when OUT is set.
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
    return {
        "benchmark": "gpu",
        "settings": {"device": device, "replicas": list(replicas), "categories": list(categories), "cell_seconds": cell_s, "budget_s": budget_s},
        "peak": peak,
        "rows": rows,
        "skipped": skipped,
        "probes": probes,
        "wall_s": time.perf_counter() - started,
    }


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
    print(f"total {result['wall_s']:.0f} s; ray imported: {result['ray_imported']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--replicas", type=_ints, default=[1, 16, 256, 1024, 4096])
    p.add_argument("--categories", type=_ints, default=[10])
    p.add_argument("--cell-seconds", type=float, default=2.0)
    p.add_argument("--budget-s", type=float, default=240.0, help="start no new cell after this many seconds")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's default)")
    p.add_argument("--small", action="store_true", help="smoke size: R 1,4,16, short cells, small matmul")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu.py: no CUDA device visible (torch.cuda.is_available() is False); use --device cpu --small for a smoke check", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.small:
        args.replicas, args.cell_seconds = [1, 4, 16], 0.3
    peak_n = 1024 if args.small or not args.device.startswith("cuda") else 8192
    result = run(
        device=args.device, replicas=args.replicas, categories=args.categories, cell_s=args.cell_seconds,
        budget_s=args.budget_s, peak_n=peak_n, probe_estimates=1000, probe_repeats=2 if args.small else 5,
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
