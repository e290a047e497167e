"""``imgclass train DATASET``: transfer learning with jetson train.py's flags."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import jetson_argv
from ..errors import ImgclassError
from ..models import DEFAULT_NETWORK
from ..train import BEST, TrainConfig


def add_parser(sub) -> None:
    d = TrainConfig(dataset="")
    # No abbreviated flags: --nproc-per-node is stripped by its full name before the re-launch.
    p = sub.add_parser("train", help="train a classifier on a dataset folder", allow_abbrev=False,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Train a classifier on DATASET (train/<class>/ and val/<class>/ folders, or class "
                                   "folders only): a head fit on cached features of a pretrained network, then a short "
                                   "fine-tune of its last blocks, keeping the best epoch by val accuracy.")
    p.add_argument("dataset", metavar="DATASET", help="dataset folder: train/<class>/*, val/<class>/* (or validation/, "
                                                      "valid/), optional test/ and labels.txt; or <class>/* only")
    p.add_argument("--model-dir", default=None, help="where checkpoints, labels.txt, results and plots go "
                                                     "(default: models/<dataset folder name>)")
    p.add_argument("-a", "--arch", default=DEFAULT_NETWORK, help="registry network (see `imgclass models`)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="fine-tuning epochs after the head fit (0: head only)")
    p.add_argument("-b", "--batch-size", type=int, default=d.batch_size, help="images per step")
    p.add_argument("--lr", "--learning-rate", type=float, default=d.lr, help="peak fine-tuning learning rate (AdamW)")
    p.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=d.weight_decay,
                   help="weight decay of the fine-tuned blocks")
    p.add_argument("--patience", type=int, default=d.patience, help="stop after this many epochs without a better val accuracy")
    p.add_argument("-j", "--workers", type=int, default=d.workers, help="threads decoding images")
    p.add_argument("--resolution", type=int, default=None, help="network input side (default: the network's own)")
    p.add_argument("--resume", default=None, metavar="CHECKPOINT", help="continue a run from its checkpoint.pth.tar")
    p.add_argument("--start-epoch", type=int, default=None, help="first epoch to run (default: after the checkpoint's)")
    p.add_argument("-e", "--evaluate", action="store_true",
                   help="only evaluate the run's model (--resume CHECKPOINT, else MODEL_DIR/model_best.pth.tar) on val")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=d.pretrained,
                   help="start from the network's ImageNet weights")
    p.add_argument("--weights", default=None, help="weights file for --arch (default: installed or torch hub cache)")
    p.add_argument("--seed", type=int, default=d.seed, help="seeds every epoch's shuffling (runs repeat exactly)")
    p.add_argument("--val-split", type=float, default=d.val_split,
                   help="fraction of each class held out for val when the dataset has no val folder")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d.device, help="where to train")
    p.add_argument("--nproc-per-node", type=int, default=None, metavar="N",
                   help="train in N processes on this machine, one per GPU (NCCL; on CPUs gloo), through torchrun; "
                        "--batch-size stays the total per step, so the result matches one process "
                        "(`torchrun -m imgclass train ...` works too, across machines)")
    p.set_defaults(func=run)


def run(args) -> int:
    model_dir = args.model_dir or str(Path("models") / Path(args.dataset).resolve().name)
    if args.evaluate:
        from .eval import print_result
        from ..train.evaluate import evaluate_dataset

        model = args.resume or str(Path(model_dir) / BEST)
        result = evaluate_dataset(args.dataset, model, batch_size=args.batch_size, workers=args.workers, device=args.device,
                                  val_split=args.val_split)
        print_result(result, "val")
        return 0
    if args.nproc_per_node is not None:
        from ..train.distributed import launch

        if args.nproc_per_node < 1:
            raise ImgclassError(f"--nproc-per-node {args.nproc_per_node}: give 1 or more processes")
        launch(without_nproc(jetson_argv(sys.argv[1:])), args.nproc_per_node)
        return 0
    from ..train import train
    from ..train.distributed import env_rank

    cfg = TrainConfig(dataset=args.dataset, model_dir=model_dir, arch=args.arch, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, patience=args.patience,
                      workers=args.workers, resolution=args.resolution, pretrained=args.pretrained, seed=args.seed,
                      val_split=args.val_split, device=args.device, weights=args.weights)
    try:
        summary = train(cfg, resume=args.resume, start_epoch=args.start_epoch)
    except ImgclassError:
        if env_rank() != 0:  # every rank reads the same data and settings: rank 0 meets the same error and says it
            return 1
        raise
    if env_rank() != 0:  # under torchrun rank 0 alone reports
        return 0
    print(summary["table"])
    stages = ", ".join(f"{stage} {acc:.2f}%" for stage, acc in summary["stages"].items())
    print(f"imgclass: best val accuracy {summary['best_acc']:.2f}% (epoch {summary['best_epoch']}; {stages}) "
          f"in {summary['seconds']:.0f} s; model in {model_dir}/{BEST}; next: imgclass export --model-dir {model_dir}")
    return 0


def without_nproc(argv: list[str]) -> list[str]:
    """The command line minus ``--nproc-per-node N`` (or ``=N``): what each launched process runs.

    Example:
        >>> without_nproc(["train", "data", "--nproc-per-node", "2", "--epochs=3", "--nproc-per-node=4"])
        ['train', 'data', '--epochs=3']
    """
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            out.append(arg)
    return out
