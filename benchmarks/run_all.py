"""Run the benchmarks and print one table of ratios against their goals; write benchmarks/results.json.

    python benchmarks/run_all.py [--small] [--only probes,population,study] [--threads N]
                                 [--num-cpus 2] [--quick-study] [--gpu [--gpu-device cuda]]
                                 [--out benchmarks/results.json]

`make bench` runs it with no flags: probes.py, population.py and study_run.py (a few minutes on a
2-core machine). --quick-study adds `study_run.py --quick-study` (peak memory of the main job,
minutes more); --gpu adds gpu.py (needs a CUDA device, or pass --gpu-device cpu). Each benchmark
runs in its own process (fresh torch thread pool, fresh Ray) with its output shown as it goes;
a benchmark that fails is reported and the others still run. Goals not met do not fail the run:
these are measurements, not tests.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/run_all.py`: benchmarks/ would shadow `study`
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import HERE, ROOT, machine_info, print_table, write_json

ALL = ("probes", "population", "study")


def run_script(name: str, args: list[str], tmp: Path) -> tuple[dict | None, float]:
    out = tmp / f"{name}.json"
    script = {"study": "study_run", "quick_study": "study_run"}.get(name, name)
    cmd = [sys.executable, str(HERE / f"{script}.py"), *args, "--json", str(out)]
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    started = time.perf_counter()
    rc = subprocess.call(cmd, cwd=ROOT)
    wall = time.perf_counter() - started
    if rc != 0 or not out.exists():
        print(f"=== {name} FAILED (exit code {rc})", flush=True)
        return None, wall
    return json.loads(out.read_text()), wall


def summary_rows(results: dict[str, dict | None]) -> list[dict]:
    rows: list[dict] = []

    def add(bench: str, measure: str, value: float | None, goal: str = "", met: bool | None = None, unit: str = "x") -> None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            shown = "failed"
        elif unit == "%":
            shown = f"{100 * value:.3g}%"
        else:
            shown = f"{value:.3g}{unit}"
        rows.append({"benchmark": bench, "measure": measure, "value": shown, "goal": goal, "met": met})

    for name, result in results.items():
        if result is None:
            add(name, "(did not finish)", None)
            continue
        if name == "probes":
            for r in result["rows"]:
                add("probes", f"{r['estimator']}: loop / batched ({r['N']} estimates)", r["ratio"], f">= {r['goal']:g}x", r["met"])
        elif name == "population":
            for g in result["goals"]:
                unit = "%" if g["unit"] == "" else "x"
                goal = f">= {100 * g['target']:g}%" if unit == "%" else f">= {g['target']:g}x"
                add("population", g["goal"], g["value"], goal, g["met"], unit)
            for r in result["rows"]:
                cell = f"R={r['R']}, K={r['K']}, D rows {r['d_rows']}"
                if (r["R"], r["K"], r["d_rows"]) == (64, 10, "K+B"):
                    add("population", f"{cell}: share of peak, executed FLOPs (info)", r["executed_share"], unit="%")
                else:
                    add("population", f"{cell}: population / plain ({100 * r['peak_share']:.3g}% of peak; executed {100 * r['executed_share']:.3g}%)", r["ratio"])
        elif name == "study":
            s = result["settings"]
            for g in result["goals"]:
                add("study", f"{g['goal']} ({s['configs']} x {s['seeds']} seeds x {s['steps']} steps)", g["value"], f">= {g['target']:g}x", g["met"])
            add("study", "gumbel-study run peak RSS, summed (info)", result["ours"]["memory"]["peak_rss_gb"], unit=" GB")
        elif name == "quick_study":
            for g in result["goals"]:
                add("quick study", g["goal"], g["value"], f"<= {g['target']:g} GB", g["met"], unit=" GB")
            add("quick study", "wall time (info)", result["quick"]["wall_s"], unit=" s")
        elif name == "gpu":
            dev = result["settings"]["device"]
            for r in result["rows"]:
                add(f"gpu ({dev})", f"R={r['R']}, K={r['K']}: population / plain one-replica loop (vs R=1: {r['vs_R1']:.3g}x; {r['peak_pct']:.3g}% of peak)", r["vs_plain"])
            for r in (result.get("probes") or {}).get("rows", []):
                add(f"gpu ({dev})", f"probes {r['estimator']}: loop / batched", r["ratio"], f">= {r['goal']:g}x", r["met"])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="smoke sizes for every benchmark (about 3 minutes)")
    p.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    p.add_argument("--threads", type=int, help="torch threads for probes and population (default: torch's default)")
    p.add_argument("--num-cpus", type=int, default=2, help="Ray CPUs for the study benchmark (default 2)")
    p.add_argument("--quick-study", action="store_true", help="also measure the peak memory of experiments/quick.toml (minutes)")
    p.add_argument("--gpu", action="store_true", help="also run gpu.py")
    p.add_argument("--gpu-device", default="cuda", help="device for gpu.py (default cuda)")
    p.add_argument("--out", default=str(HERE / "results.json"), help="where to write the combined JSON")
    args = p.parse_args(argv)

    small = ["--small"] if args.small else []
    threads = ["--threads", str(args.threads)] if args.threads else []
    plan: list[tuple[str, list[str]]] = []
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(only) - set(ALL)
    if unknown:
        p.error(f"--only: unknown benchmark(s) {sorted(unknown)}; known: {', '.join(ALL)}")
    for name in only:
        if name == "study":
            plan.append((name, small + ["--num-cpus", str(args.num_cpus)]))
        else:
            plan.append((name, small + threads))
    if args.quick_study:
        plan.append(("quick_study", ["--quick-study", "--num-cpus", str(args.num_cpus)]))
    if args.gpu:
        plan.append(("gpu", small + ["--device", args.gpu_device]))

    started = time.perf_counter()
    results: dict[str, dict | None] = {}
    walls: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="gumbel-bench-all-") as tmp:
        for name, extra in plan:
            results[name], walls[name] = run_script(name, extra, Path(tmp))
    rows = summary_rows(results)
    print()
    print_table(rows, ["benchmark", "measure", "value", "goal", "met"], title=f"benchmarks: ratios measured in this run ({time.perf_counter() - started:.0f} s)")
    info = machine_info()
    if "load_average" in info:
        print(f"load average at the end: {info['load_average']} on {info['available_cpus']} CPUs (a busy machine makes every number noisy)")
    write_json(args.out, {"machine": info, "small": args.small, "summary": rows, "wall_s": walls, "benchmarks": results})
    print(f"wrote {args.out}")
    return 0 if all(r is not None for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
