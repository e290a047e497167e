"""``imgclass train DATASET``: transfer learning with jetson train.py's flags."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import fields
from pathlib import Path

from ..errors import ImgclassError
from ..flags import jetson_argv
from ..train import BEST, CHECKPOINT, TrainConfig
from ..train.config import format_duration, parse_duration
from . import HelpFormatter

DEFAULTS = TrainConfig(dataset="")


def add_setting(p: argparse.ArgumentParser, *flags: str, **kwargs) -> None:
    """A flag for a TrainConfig field, left out of args unless given: a resumed run takes every setting
    not given from its checkpoint. The default (TrainConfig's) goes in the help text."""
    action = p.add_argument(*flags, default=argparse.SUPPRESS, **kwargs)
    default = getattr(DEFAULTS, action.dest)
    if default is not None and "default" not in action.help:
        action.help += f" (default: {default})"


def duration(text: str) -> float:
    """``--time``'s value in seconds, for argparse (which reports a bad one as this flag's error)."""
    try:
        return parse_duration(text)
    except ImgclassError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"--time {text!r}: ")) from None


def add_parser(sub) -> None:
    # No abbreviated flags: --nproc-per-node is stripped by its full name before the re-launch.
    p = sub.add_parser("train", help="train a classifier on a dataset folder", allow_abbrev=False,
                       formatter_class=HelpFormatter,
                       description="Train a classifier on DATASET (train/<class>/ and val/<class>/ folders, or class "
                                   "folders only): a head fit on cached features of a pretrained network, then a short "
                                   "fine-tune of its last blocks (or, with --finetune all, every layer on streamed, "
                                   "augmented images), keeping the best epoch by val accuracy. With --resume, "
                                   "the settings not given come from the checkpoint.")
    p.add_argument("dataset", metavar="DATASET", help="dataset folder: train/<class>/*, val/<class>/* (or validation/, "
                                                      "valid/), optional test/ and labels.txt; or <class>/* only")
    add_setting(p, "--model-dir", help="where checkpoints, labels.txt, results and plots go (default: "
                                       "models/<dataset folder name>; with --resume, the checkpoint's folder)")
    add_setting(p, "-a", "--arch", help="registry network (see `imgclass models`)")
    add_setting(p, "--epochs", type=int, help="fine-tuning epochs after the head fit (0: head only); "
                                              "with --resume, train up to this epoch")
    add_setting(p, "-b", "--batch-size", type=int, help="images per step")
    add_setting(p, "--lr", "--learning-rate", type=float, help="peak fine-tuning learning rate (AdamW)")
    add_setting(p, "--wd", "--weight-decay", dest="weight_decay", type=float, help="weight decay of the fine-tuned blocks")
    add_setting(p, "--patience", type=int, help="stop after this many epochs without a better val accuracy")
    add_setting(p, "-j", "--workers", type=int,
                help="threads decoding images (with --finetune all, also the processes that decode and augment "
                     "training images)")
    add_setting(p, "--resolution", type=int, help="network input side (default: the network's own, or 8/7 of it "
                                                  "when the dataset's images are smaller than it)")
    add_setting(p, "--finetune", choices=["tail", "all"],
                help="the recipe: tail = a head fit on cached features of the frozen network, then its last blocks "
                     "fine-tuned on cached activations (seconds on a CPU, best for small datasets); all = every layer "
                     "fine-tuned on images streamed from disk with random crops, flips and TrivialAugment (large, "
                     "hard or unusual data, a GPU; memory flat in the dataset's size)")
    p.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue a run from its checkpoint.pth.tar, in its folder and with its settings "
                        "(the flags given here change them)")
    p.add_argument("--start-epoch", type=int, default=None, help="first epoch to run (default: after the checkpoint's)")
    p.add_argument("-e", "--evaluate", action="store_true",
                   help="only evaluate the run's model (--resume CHECKPOINT, else MODEL_DIR/model_best.pth.tar) on val")
    add_setting(p, "--pretrained", action=argparse.BooleanOptionalAction, help="start from the network's ImageNet weights")
    add_setting(p, "--weights", help="weights file for --arch (default: installed or torch hub cache)")
    add_setting(p, "--seed", type=int, help="seeds every epoch's shuffling (runs repeat exactly)")
    add_setting(p, "--val-split", type=float, help="fraction of each class held out for val when the dataset has no val folder")
    add_setting(p, "--device", choices=["auto", "cpu", "cuda"], help="where to train")
    add_setting(p, "--time", type=duration, metavar="DURATION",
                help="finish training within this budget (90s, 5m, 1h30m; the model's export after it comes on "
                     "top): the network and epochs are chosen from speeds measured on this machine, and "
                     "fine-tuning stops when another epoch would pass it; with "
                     "--finetune all nothing is chosen, only the epochs stop (default: no budget; --arch and "
                     "--epochs as given)")
    p.add_argument("--nproc-per-node", type=int, default=None, metavar="N",
                   help="train in N processes on this machine, one per GPU (NCCL; on CPUs gloo), through torchrun; "
                        "--batch-size stays the total per step, so the result matches one process "
                        "(`torchrun -m imgclass train ...` works too, across machines)")
    p.set_defaults(func=run, jetson=False)


def run(args) -> int:
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    # named as typed ("data/fruit/" and "." work), not after a symlinked dataset's target
    fresh = TrainConfig(**{"model_dir": str(Path("models") / Path(os.path.abspath(args.dataset)).name), **given})
    if args.evaluate:
        from ..train.evaluate import evaluate_dataset
        from .eval import print_result

        model = args.resume or str(Path(fresh.model_dir) / BEST)
        result = evaluate_dataset(args.dataset, model, batch_size=fresh.batch_size, workers=fresh.workers,
                                  device=fresh.device, val_split=fresh.val_split)
        print_result(result, "val")
        return 0
    if args.nproc_per_node is not None and args.nproc_per_node < 1:
        raise ImgclassError(f"--nproc-per-node {args.nproc_per_node}: give 1 or more processes")
    from ..train import resume_config, train
    from ..train.distributed import LAUNCHED, env_rank, launch

    cfg = resume_config(args.resume, **given) if args.resume else fresh
    started = time.time()
    try:
        if args.nproc_per_node is not None:
            launch(without_nproc(jetson_argv(sys.argv[1:])), args.nproc_per_node)
            return 0
        summary = train(cfg, resume=args.resume, start_epoch=args.start_epoch)
    except ImgclassError:
        if env_rank() != 0:  # every rank reads the same data and settings: rank 0 meets the same error and says it
            return 1
        raise
    except KeyboardInterrupt:
        # The launcher of launched processes says it; under torchrun itself, rank 0 does.
        if args.nproc_per_node is not None or (env_rank() == 0 and LAUNCHED not in os.environ):
            print(f"imgclass: interrupted; {resume_hint(cfg, args.resume, started, args.nproc_per_node)}",
                  file=sys.stderr)
        return 130
    if env_rank() != 0:  # under torchrun rank 0 alone reports
        return 0
    print(summary["table"])
    stages = ", ".join(f"{stage} {acc:.2f}%" for stage, acc in summary["stages"].items())
    if summary["plan"]:
        print(f"imgclass: planned {summary['plan']}; took {format_duration(summary['seconds'])}")
    print(f"imgclass: best val accuracy {summary['best_acc']:.2f}% (epoch {summary['best_epoch']}; {stages}; "
          f"input {summary['input_size']} px) "
          f"in {summary['seconds']:.0f} s; model in {cfg.model_dir}/{BEST}", end="")
    if args.jetson:  # the tutorial's next step is its own script
        print(f"; next: onnx_export.py --model-dir={cfg.model_dir}")
        return 0
    from ..export.run import export_run

    # The run ends ready to use: `classify --model RUN` works at once (export stays for int8 and --jetson).
    print(flush=True)  # the line ends before the export's messages on stderr
    exported = export_run(cfg.model_dir)
    print(f"imgclass: exported {exported['path']} (ONNX Runtime agrees with PyTorch on {exported['images']} val "
          f"images); classify with: imgclass classify IMAGES --model {shlex.quote(str(cfg.model_dir))}")
    return 0


def resume_hint(cfg: TrainConfig, resume: str | None, since: float, nproc: int | None) -> str:
    """The command that continues an interrupted run: its dataset and latest checkpoint (the one it
    wrote, else the one it resumed from), which holds every other setting.

    Args:
        since: when the run started; an older checkpoint in its folder is not its own.
    """
    written = Path(cfg.model_dir) / CHECKPOINT
    latest = written if written.is_file() and written.stat().st_mtime >= since else resume
    if latest is None:
        return "no checkpoint was written yet; run the same command to go on (the trunk features stored so far are kept)"
    command = ["imgclass", "train", cfg.dataset, "--resume", str(latest)]
    if Path(latest).parent != Path(cfg.model_dir):
        command += ["--model-dir", cfg.model_dir]
    if nproc is not None:
        command += ["--nproc-per-node", str(nproc)]
    return f"continue with: {shlex.join(command)}"


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


def jetson_parser() -> argparse.ArgumentParser:
    """The parser behind ``train.py``: ``imgclass train``'s flags plus those of jetson's pytorch-classification
    train.py that have no twin here."""
    holder = argparse.ArgumentParser().add_subparsers()
    add_parser(holder)  # the very flags of `imgclass train`, on a parser of its own
    p = holder.choices["train"]
    p.prog = "train.py"
    g = p.add_argument_group("jetson train.py flags")
    g.add_argument("--momentum", type=float, default=None,
                   help="SGD's momentum in jetson's train.py; accepted and not used: imgclass fine-tunes with AdamW, "
                        "whose first-moment decay (beta1 0.9) takes its place")
    g.add_argument("--gpu", type=int, default=None, metavar="N", help="train on CUDA GPU N (--device cuda on that GPU)")
    g.add_argument("--dataset-type", choices=["folder", "voc"], default="folder",
                   help="folder: DATA/train/<class>/*, DATA/val/<class>/* (the only kind imgclass trains on)")
    g.add_argument("-p", "--print-freq", type=int, default=None,
                   help="accepted; imgclass shows a progress bar per epoch instead of a line every N batches")
    p.set_defaults(func=run_jetson, jetson=True)
    return p


def run_jetson(args) -> int:
    """``train.py``: jetson's flags mapped onto ``imgclass train``."""
    if args.dataset_type != "folder":
        raise ImgclassError(f"--dataset-type {args.dataset_type}: imgclass trains on folder datasets "
                            "(DATA/train/<class>/*, DATA/val/<class>/*); multi-label VOC datasets are not supported")
    if args.nproc_per_node is not None:  # the processes are launched as `imgclass train`, with its flags only
        raise ImgclassError("--nproc-per-node: run it as imgclass train DATA ... --nproc-per-node N")
    if args.momentum is not None:
        print(f"imgclass: note: --momentum {args.momentum:g} is not used: imgclass fine-tunes with AdamW, whose "
              "first-moment decay (beta1 0.9) takes SGD momentum's place", file=sys.stderr)
    if args.gpu is not None:
        args.device = use_gpu(args.gpu)
    return run(args)


def use_gpu(index: int) -> str:
    """jetson's ``--gpu N``: only CUDA GPU N is visible to the run; the CPU, with a note, where there is none."""
    from ..runtime.select import resolve_device

    os.environ["CUDA_VISIBLE_DEVICES"] = str(index)  # before torch first looks at the GPUs
    if resolve_device("auto") == "cuda":
        return "cuda"
    print(f"imgclass: note: --gpu {index}: no such CUDA GPU here; training on the CPU", file=sys.stderr)
    return "cpu"
