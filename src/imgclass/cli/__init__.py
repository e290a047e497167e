"""Command line: ``imgclass VERB ...``. Each verb is a module with ``add_parser(subparsers)`` and
``run(args) -> int``; this file only dispatches and turns errors into one line."""
from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module

from ..errors import ImgclassError

VERBS = ["classify", "models", "train", "export", "eval", "capture", "benchmark"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgclass", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Everyday image classification: classify, capture, train, export, run anywhere.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        try:
            import_module(f"{__name__}.{verb}").add_parser(sub)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{verb}":
                raise
    return parser


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make a bad flag end in one line (``imgclass classify: error: ...; see --help``), not a usage dump."""
    def error(message: str):
        print(f"{parser.prog}: error: {message}; see {parser.prog} --help", file=sys.stderr)
        sys.exit(2)

    parser.error = error
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                one_line_errors(sub)
    return parser


def run_cli(run, args) -> int:
    """Run a verb: an ImgclassError or Ctrl-C ends in one line and a non-zero exit, never a traceback."""
    try:
        return run(args) or 0
    except ImgclassError as e:
        print(f"imgclass: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("imgclass: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `imgclass classify ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def main(argv: list[str] | None = None) -> int:
    """``imgclass`` entry point."""
    argv = jetson_argv(sys.argv[1:] if argv is None else argv)  # jetson's spellings work everywhere
    args = one_line_errors(build_parser()).parse_args(argv)
    return run_cli(args.func, args)


def _alias(module: str, argv: list[str] | None) -> int:
    mod = import_module(f"{__name__}.{module}")
    argv = jetson_argv(sys.argv[1:] if argv is None else argv)
    args = one_line_errors(mod.jetson_parser()).parse_args(argv)
    return run_cli(args.func, args)


def imagenet_main(argv: list[str] | None = None) -> int:
    """``imagenet`` / ``imagenet.py``: jetson-inference's spellings."""
    return _alias("classify", argv)


def camera_capture_main(argv: list[str] | None = None) -> int:
    """``camera-capture``: jetson's dataset collection tool."""
    return _alias("capture", argv)


def onnx_export_main(argv: list[str] | None = None) -> int:
    """``onnx_export.py``: jetson's export script."""
    return _alias("export", argv)


def jetson_argv(argv: list[str]) -> list[str]:
    """Normalize jetson option spellings: ``--input_blob=x`` -> ``--input-blob=x``, ``--topK`` -> ``--topk``.

    Example:
        >>> jetson_argv(["--topK=3", "--input_blob", "data", "in.jpg"])
        ['--topk=3', '--input-blob', 'data', 'in.jpg']
    """
    out = []
    for arg in argv:
        if arg.startswith("--"):
            key, eq, value = arg.partition("=")
            arg = key.replace("_", "-").lower() + eq + value
        out.append(arg)
    return out
