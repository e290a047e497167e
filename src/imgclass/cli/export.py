"""``imgclass export RUN`` (or ``--model-dir RUN``): RUN/model.onnx, checked against PyTorch; with ``--jetson``
(and as jetson's ``onnx_export.py``): RUN/<arch>.onnx and labels.txt for jetson-inference's imagenet."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import HelpFormatter
from ..errors import ImgclassError
from ..runtime.select import PRECISIONS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="?", default=None, metavar="RUN", help="the training run's folder")
    p.add_argument("--model-dir", default=None, help="the training run's folder (instead of RUN)")
    p.add_argument("--input", default=None, help="checkpoint to export (default: RUN/model_best.pth.tar)")
    p.add_argument("--output", default=None,
                   help="ONNX file to write (default: RUN/model.onnx; with --jetson, RUN/<arch>.onnx)")
    p.add_argument("--jetson", action="store_true",
                   help="for jetson-inference's `imagenet --model=... --input_blob=input_0 --output_blob=output_0 "
                        "--labels=...`: static batch 1, opset 13, jetson's whole-frame resize and ImageNet "
                        "normalization taken as input (the crop and the model's own normalization are done in the "
                        "graph), labels.txt beside the file")
    p.add_argument("--no-softmax", action="store_true", help="output logits instead of probabilities")
    p.add_argument("--check-images", default=None,
                   help="images (folder or glob) for the ONNX/PyTorch agreement check (default: the run's val images)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="int8: RUN/model-int8.onnx, quantized (QDQ) and calibrated on the run's train images, written "
                        "once its top-1 on the val images is within half a point of fp32's; run it with --precision "
                        "int8. bf16 and auto are runtime settings: export fp32 and run with them")
    p.add_argument("--calibration", default=None, metavar="FOLDER",
                   help="images that calibrate --precision int8 (default: the run's train images)")


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a trained run to ONNX", formatter_class=HelpFormatter,
                       description="Write the run's best model as ONNX (dynamic batch, input_0 -> output_0, softmax, "
                                   "labels and preprocessing in the metadata), then check that ONNX Runtime and "
                                   "PyTorch agree on real images.")
    add_arguments(p)
    p.set_defaults(func=run)


def jetson_parser() -> argparse.ArgumentParser:
    """The parser behind ``onnx_export.py``, accepting jetson-inference's spellings."""
    p = argparse.ArgumentParser(prog="onnx_export.py", formatter_class=HelpFormatter,
                                description="Export a trained model to ONNX (jetson-inference onnx_export.py compatible).")
    add_arguments(p)
    p.set_defaults(func=run, jetson=True)  # onnx_export.py's file is for a Jetson
    return p


def run(args) -> int:
    if args.jetson and args.precision != "fp32":
        raise ImgclassError(f"--precision {args.precision} with --jetson: jetson-inference builds its own TensorRT "
                            "engine (fp16) from the fp32 file; leave --precision out")
    if args.jetson:
        return run_jetson(args)
    from ..export.run import export_run

    result = export_run(run_dir(args), checkpoint=args.input, output=args.output, softmax=not args.no_softmax,
                        check_images=args.check_images, precision=args.precision, calibration=args.calibration)
    if args.precision == "int8":
        print(f"imgclass: wrote {result['path']}, calibrated on {result['calibration']} images; top-1 on "
              f"{result['images']} real images: int8 {result['top1_int8']:.1%}, fp32 {result['top1_fp32']:.1%}; next: "
              f"imgclass classify IMAGE --model {result['path']} --precision int8")
        return 0
    print(f"imgclass: wrote {result['path']}; ONNX Runtime matches PyTorch on {result['images']} real images "
          f"(max prob difference {result['max_abs_diff']:.1e}, top-1 agreement {result['top1_agreement']:.0%}); "
          f"next: imgclass classify IMAGE --model {result['path']}")
    return 0


def run_jetson(args) -> int:
    from ..export.jetson import export_jetson_run

    r = export_jetson_run(run_dir(args), checkpoint=args.input, output=args.output, softmax=not args.no_softmax,
                          check_images=args.check_images)
    print(f"imgclass: wrote {r['path']} and {r['labels']} for jetson-inference (input_0 1x3x{r['input_size']}x"
          f"{r['input_size']} taking jetson's own preprocessing, output_0); ONNX Runtime matches PyTorch on "
          f"{r['images']} real images (max prob difference {r['max_abs_diff']:.1e}, top-1 agreement "
          f"{r['top1_agreement']:.0%}); on the Jetson: imagenet --model={r['path']} --labels={r['labels']} "
          "--input_blob=input_0 --output_blob=output_0 IMAGE")
    return 0


def run_dir(args) -> str:
    """The run folder, given as RUN or --model-dir."""
    if args.run_dir and args.model_dir and Path(args.run_dir) != Path(args.model_dir):
        raise ImgclassError(f"two run folders given ({args.run_dir} and --model-dir {args.model_dir}); give one")
    if not (args.run_dir or args.model_dir):
        raise ImgclassError("no run folder given; use imgclass export RUN (the folder imgclass train wrote)")
    return args.run_dir or args.model_dir
