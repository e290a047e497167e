"""Command line: ``imgclass VERB ...``. Each verb is a module with ``add_parser(subparsers)`` and
``run(args) -> int``; this file only dispatches and turns errors into one line."""
from __future__ import annotations

import argparse
import difflib
import os
import re
import signal
import sys
import threading
from contextlib import contextmanager
from importlib import import_module
from typing import Iterator

from ..errors import ImgclassError
from ..flags import LOG_LEVELS, jetson_argv, set_log_level

VERBS = ["classify", "models", "train", "export", "eval", "capture", "benchmark", "serve"]



class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default shown once: appended as ``(default: X)`` unless the help text
    already states it (often in words, like "default: the model's own setting"), and left out where there
    is none to show (None, an off flag, a required option)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (re.search(r"\bdefault\b", text) or action.required or action.default is None
                or action.default is False or action.default is argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgclass", formatter_class=HelpFormatter,
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
        extra = message.removeprefix("unrecognized arguments: ").split()
        if message.startswith("unrecognized arguments:") and all(os.path.exists(arg) for arg in extra):
            # `imgclass classify photos/*.jpg` unquoted: the shell passed every file
            message = (f"{len(extra)} more files than INPUT [OUTPUT] ({extra[0]}, ...): the shell expanded a glob; "
                       f"quote it ('photos/*.jpg') or give the folder")
        elif message.startswith("unrecognized arguments:"):
            message += did_you_mean(extra, list(parser._option_string_actions))
        print(f"{parser.prog}: error: {message}; see {parser.prog} --help", file=sys.stderr)
        sys.exit(2)

    parser.error = error
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                one_line_errors(sub)
    return parser


def did_you_mean(given: list[str], options: list[str]) -> str:
    """``" (did you mean --topk?)"`` for flags close to one the parser has; "" for none.

    Example:
        >>> did_you_mean(["--top-k", "3"], ["--topk", "--threshold"])
        ' (did you mean --topk?)'
    """
    close = [m[0] for flag in given if flag.startswith("-")
             for m in [difflib.get_close_matches(flag.split("=")[0], options, n=1, cutoff=0.7)] if m]
    return f" (did you mean {', '.join(close)}?)" if close else ""


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; an unknown flag is reported by the verb's own parser (its flags suggested, its
    ``--help`` named), not by ``imgclass``'s."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        verbs.get(getattr(args, "verb", None), parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def run_cli(run, args) -> int:
    """Run a verb: an ImgclassError or Ctrl-C ends in one line and a non-zero exit, never a traceback."""
    try:
        return run(args) or 0
    except ImgclassError as e:
        print(f"imgclass: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        print(f"imgclass: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:  # `imgclass classify ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt so that the same clean-up runs (exit 143)."""


@contextmanager
def sigterm_stops_like_ctrl_c() -> Iterator[threading.Event]:
    """Within the block SIGTERM (``kill``, ``docker stop``, systemd) stops the work as Ctrl-C does, so a
    video being written is finalized rather than left as a hidden temporary file. Call from the main
    thread. Yields an Event that is set once SIGTERM came."""
    came = threading.Event()

    def stop(signum, frame) -> None:
        came.set()
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield came
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """``imgclass`` entry point."""
    argv = jetson_argv(sys.argv[1:] if argv is None else argv)  # jetson's spellings work everywhere
    args = parse(one_line_errors(build_parser()), argv)
    return run_cli(args.func, args)


def _alias(module: str, argv: list[str] | None) -> int:
    mod = import_module(f"{__name__}.{module}")
    argv = jetson_argv(sys.argv[1:] if argv is None else argv)
    parser = mod.jetson_parser()
    parser.add_argument("--log-level", type=str.lower, choices=list(LOG_LEVELS), default=None,
                        help="how much imgclass's log says, jetson's levels (default: warnings and errors)")
    args = one_line_errors(parser).parse_args(argv)
    if args.log_level:
        set_log_level(args.log_level)
    return run_cli(args.func, args)


def imagenet_main(argv: list[str] | None = None) -> int:
    """``imagenet`` / ``imagenet.py``: jetson-inference's spellings."""
    return _alias("classify", argv)


def camera_capture_main(argv: list[str] | None = None) -> int:
    """``camera-capture``: jetson's dataset collection tool."""
    return _alias("capture", argv)


def onnx_export_main(argv: list[str] | None = None) -> int:
    """``onnx_export.py``: jetson's export script (writes the Jetson file, as ``imgclass export --jetson``)."""
    return _alias("export", argv)


def train_main(argv: list[str] | None = None) -> int:
    """``train.py``: jetson's pytorch-classification training script and its flags."""
    return _alias("train", argv)
