"""``imgclass benchmark``: images/s and latency per device and runtime, next to plain torch."""
from __future__ import annotations

import json

from . import HelpFormatter
from ..models import DEFAULT_NETWORK


def add_parser(sub) -> None:
    p = sub.add_parser("benchmark", help="measure images/s and latency on every device here",
                       formatter_class=HelpFormatter,
                       description="Model-only and end-to-end speed for each available device and runtime, "
                                   "with plain torch eager fp32 measured in the same run for comparison.")
    p.add_argument("--network", default=DEFAULT_NETWORK, help="registry network")
    p.add_argument("--folder", default=None, help="image folder or glob for the end-to-end figures (default: model only)")
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all", help="which devices to measure")
    p.add_argument("--cpu-batch", type=int, default=8, help="large batch size on the CPU")
    p.add_argument("--cuda-batch", type=int, default=256, help="large batch size on CUDA")
    p.add_argument("--precision", choices=["all", "bf16", "int8", "fp32"], default="all",
                   help="reduced CPU precisions (OpenVINO) measured in turns with ONNX Runtime fp32: all those this "
                        "CPU has, one of them, or fp32 only")
    p.add_argument("--calibration", default=None, metavar="FOLDER",
                   help="images that calibrate int8 (default: --folder's; a folder of other photos like them keeps "
                        "the agreement figure honest; without either, no int8 rows)")
    p.add_argument("--json", action="store_true", help="one JSON object per result")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..benchmark import run_benchmark  # imports torch
    devices = ("cpu", "cuda") if args.device == "all" else (args.device,)
    if not args.json:
        print(f"{'device':<6} {'runtime':<58} {'mode':<11} {'batch':>6} {'img/s':>10} {'latency ms':>11}")
    precisions = {"all": ("bf16", "int8"), "fp32": ()}.get(args.precision, (args.precision,))
    for r in run_benchmark(args.network, args.folder, devices, args.cpu_batch, args.cuda_batch, precisions,
                           args.calibration):
        if args.json:
            print(json.dumps(r), flush=True)
        elif "ceilings" in r:
            c, per = r["ceilings"], r["per_image"]
            print(f"{r['gpu']}: measured ceilings {c['copy_bytes_per_s'] / 1e12:.2f} TB/s copy, "
                  f"{c['bf16_flops_per_s'] / 1e12:.0f} TFLOP/s bf16; per image {per['flops'] / 1e9:.2f} GFLOP, "
                  f"{per['activation_bytes'] / 1e6:.1f} MB of activations")
        else:
            extra = (f"  (unfused traffic at {r['bandwidth_fraction'] * 100:.0f}% of copy bandwidth, {r['flops_fraction'] * 100:.1f}% of bf16 FLOP/s)"
                     if "bandwidth_fraction" in r else "")
            if "vs_fp32" in r:
                extra += f"  {r['vs_fp32']:.2f}x fp32"
            if "top1_agreement" in r:
                extra += f", top-1 = fp32's on {r['top1_agreement']:.1%}"
            print(f"{r['device']:<6} {r['runtime']:<58} {r['mode']:<11} {r['batch']:>6} {r['images_per_s']:>10.1f} "
                  f"{r['latency_ms']:>11.2f}{extra}", flush=True)
    return 0
