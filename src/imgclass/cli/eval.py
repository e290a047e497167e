"""``imgclass eval DATASET --model ...``: top-1/top-5, per-class table, confusion matrix."""
from __future__ import annotations

from pathlib import Path

from . import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="accuracy of a model on a dataset", formatter_class=HelpFormatter,
                       description="Evaluate a trained run (folder or checkpoint), an ONNX file, or a pretrained ImageNet "
                                   "network (dataset classes named like ImageNet labels, or --mapping) on a dataset split.")
    p.add_argument("dataset", metavar="DATASET", help="dataset folder (same layout as for train)")
    p.add_argument("--model", required=True, help="run folder, checkpoint (.pth.tar), ONNX file or registry network")
    p.add_argument("--split", choices=["val", "test", "train"], default="val", help="which images to score")
    p.add_argument("--mapping", default=None,
                   help="file of 'CLASS<TAB>OUTPUT' lines (OUTPUT: a model label or index), e.g. for an ImageNet network")
    p.add_argument("--confusion", default=None,
                   help="confusion matrix PNG (default: confusion_<split>.png beside a run's model, else in the current folder)")
    p.add_argument("-b", "--batch-size", type=int, default=32, help="images per batch")
    p.add_argument("-j", "--workers", type=int, default=2, help="threads decoding images")
    p.add_argument("--val-split", type=float, default=0.2, help="val fraction when the dataset has no val folder "
                                                                "(a run's split.json wins)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run")
    p.set_defaults(func=run)


def print_result(result: dict, split: str) -> None:
    print(result["table"])
    print(f"imgclass: {result['model']} on {result['images']} {split} images: top-1 {result['top1']:.2f}%, "
          f"top-5 {result['top5']:.2f}%" + (f"; {len(result['skipped'])} unreadable skipped" if result["skipped"] else ""))


def run(args) -> int:
    from ..train.evaluate import evaluate_dataset

    model = Path(args.model)
    folder = model if model.is_dir() else model.parent if model.is_file() else Path(".")
    confusion = args.confusion or folder / f"confusion_{args.split}.png"
    result = evaluate_dataset(args.dataset, args.model, args.split, args.mapping, args.batch_size, args.workers,
                              args.device, args.val_split, confusion)
    print_result(result, args.split)
    print(f"imgclass: confusion matrix written to {confusion}")
    return 0
