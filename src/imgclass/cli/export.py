"""``imgclass export --model-dir DIR`` (and jetson's ``onnx_export.py``): DIR/model.onnx, checked against PyTorch."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", required=True, help="the training run's folder")
    p.add_argument("--input", default=None, help="checkpoint to export (default: MODEL_DIR/model_best.pth.tar)")
    p.add_argument("--output", default=None, help="ONNX file to write (default: MODEL_DIR/model.onnx)")
    p.add_argument("--no-softmax", action="store_true", help="output logits instead of probabilities")
    p.add_argument("--check-images", default=None,
                   help="images (folder or glob) for the ONNX/PyTorch agreement check (default: the run's val images)")


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a trained run to ONNX", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Write the run's best model as ONNX (dynamic batch, input_0 -> output_0, softmax, "
                                   "labels and preprocessing in the metadata), then check that ONNX Runtime and "
                                   "PyTorch agree on real images.")
    add_arguments(p)
    p.set_defaults(func=run)


def jetson_parser() -> argparse.ArgumentParser:
    """The parser behind ``onnx_export.py``, accepting jetson-inference's spellings."""
    p = argparse.ArgumentParser(prog="onnx_export.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description="Export a trained model to ONNX (jetson-inference onnx_export.py compatible).")
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..train.export import export_run

    result = export_run(args.model_dir, checkpoint=args.input, output=args.output, softmax=not args.no_softmax,
                        check_images=args.check_images)
    print(f"imgclass: wrote {result['path']}; ONNX Runtime matches PyTorch on {result['images']} real images "
          f"(max prob difference {result['max_abs_diff']:.1e}, top-1 agreement {result['top1_agreement']:.0%}); "
          f"next: imgclass classify IMAGE --model {result['path']}")
    return 0
