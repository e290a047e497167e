"""`imgclass train --time`: the real time of the whole command next to its budget, with what it planned.

    python benchmarks/train_time_budget.py --data ../shared/data/hymenoptera --budgets 30s 1m 2m 5m
    python benchmarks/train_time_budget.py --data ../shared/data/flowers12 --budgets 1m 3m --device cpu

Each budget runs ``imgclass train DATA --time BUDGET`` in a fresh process exactly as a user types it,
with the user's cache (the first run on a machine also measures the networks' speeds, which later runs
read back; the table says which run did). Printed per budget: the plan (network, fine-tune epochs, its
predicted time), the training's own time (``took``, what the budget governs), the whole command from
process start to exit (Python and torch start-up and the ONNX export of the trained model included),
and the best val accuracy; a budget too short for any plan shows the one line it is refused with. A
last row runs without ``--time`` (the defaults) for reference.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imgclass.runtime.cache import cache_dir
from imgclass.train.config import format_duration, parse_duration

PLANNED = re.compile(r"imgclass: planned --time [^:]+: (.+): about ([^(;]+?)(?: \(.*\))?; took (.+)$", re.M)
BEST = re.compile(r"best val accuracy ([\d.]+)% .* in (\d+) s;")


def run_train(data: str, model_dir: Path, flags: list[str]) -> dict:
    """One ``imgclass train`` command: its wall time, plan and accuracy (a failure stops the benchmark)."""
    rates = cache_dir() / "training-rates.json"
    before = rates.stat().st_mtime if rates.exists() else None
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "imgclass", "train", data, "--model-dir", str(model_dir), *flags],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    said = done.stderr.strip().splitlines()[-1:] or [""]
    if done.returncode != 0 and said[0].startswith("imgclass: error: --time"):  # a budget too short: refused
        return {"plan": said[0].removeprefix("imgclass: error: "), "predicted": "", "took": 0, "wall": wall,
                "acc": float("nan"), "measured": False}
    if done.returncode != 0:
        sys.exit(f"failed: imgclass train {data} {' '.join(flags)}\n{done.stderr[-2000:]}")
    plan, best = PLANNED.search(done.stdout), BEST.search(done.stdout)
    measured = rates.exists() and rates.stat().st_mtime != before and "--time" in flags
    return {"plan": plan.group(1) if plan else "defaults", "predicted": plan.group(2) if plan else "",
            "took": int(best.group(2)), "wall": wall, "acc": float(best.group(1)), "measured": measured}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a dataset folder (train/ and val/)")
    ap.add_argument("--budgets", nargs="+", default=["30s", "1m", "2m", "5m"], help="--time values to run")
    ap.add_argument("--device", default=None, help="--device for every run (default: imgclass's own choice)")
    args = ap.parse_args()
    flags = ["--device", args.device] if args.device else []
    rows = []
    with tempfile.TemporaryDirectory(prefix="time-budget-") as tmp:
        for i, budget in enumerate([*args.budgets, None]):
            extra = ["--time", budget] if budget else []
            row = run_train(args.data, Path(tmp) / f"run{i}", [*flags, *extra])
            row["budget"] = format_duration(parse_duration(budget)) if budget else "none"
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    print(f"{'budget':>7} | {'took':>5} | {'whole':>6} | {'val %':>6} | plan (predicted)")
    for r in rows:
        note = "; this run measured the networks' speeds" if r["measured"] else ""
        print(f"{r['budget']:>7} | {r['took']:>4}s | {r['wall']:>5.0f}s | {r['acc']:>6.2f} | "
              f"{r['plan']}{' (' + r['predicted'] + ')' if r['predicted'] else ''}{note}")


if __name__ == "__main__":
    main()
