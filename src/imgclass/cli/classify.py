"""``imgclass classify`` (and jetson's ``imagenet``): classify images, folders and globs, and
videos, cameras and streams frame by frame."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from . import HelpFormatter, sigterm_stops_like_ctrl_c
from .classify_table import add_table_arguments, is_table_output, run_table
from ..batch import RAY_WORDS
from ..classifier import Classifier, result_record
from ..config import ClassifierConfig, check_threshold, check_topk
from ..errors import ImgclassError
from ..flags import set_log_level
from ..media.images import (VIDEO_SUFFIXES, ImageSink, check_replaceable, file_ids, is_image_path,
                            unquoted_glob_hint)
from ..media.inputs import ImageList, MediaInput, resolve_input
from ..media.options import add_media_arguments, sink_options, source_options
from ..models import DEFAULT_NETWORK
from ..models.jetson import stand_in
from ..runtime.base import Job
from ..runtime.machine import record_job, seconds_since_start
from ..runtime.select import DEVICES, PRECISIONS
from ..overlay import draw_overlay, overlay_lines


def add_arguments(p: argparse.ArgumentParser, jetson: bool = False) -> None:
    p.add_argument("input", metavar="INPUT" if not jetson else "input_URI",
                   help="image file, folder (searched recursively, natural order), quoted glob like 'photos/*.jpg', .txt "
                        "list of images (one a line), or a .parquet/.csv/.jsonl table's --path-column; or a video "
                        "file, camera (/dev/video0, 0), rtsp://, rtp://@:PORT or http(s):// stream")
    p.add_argument("output", nargs="?", default=None, metavar="OUTPUT" if not jetson else "output_URI",
                   help="where annotated frames go: an image file, a pattern like out_%%i.jpg, a directory, a video "
                        "file (.mp4 .mkv .avi .mov .webm), rtp://HOST:PORT, rtsp://@:8554/out, or display://0 "
                        "(a window, or a web page without a display); default: none (a window for video where "
                        "there is a display)")
    add_model_arguments(p)
    add_result_arguments(p)
    p.add_argument("--batch-size", type=int, default=8, help="images per inference batch")
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument("--verbose", action="store_true", help="say how the device and the engine were chosen")
    p.add_argument("--headless", "--no-display", action="store_true",
                   help="never open a window (jetson flag; display://0 becomes the web page)")
    add_media_arguments(p)
    add_table_arguments(p)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Which network or ONNX model, and where it runs: the flags of ``config.ClassifierConfig``."""
    p.add_argument("--network", default=DEFAULT_NETWORK, help="registry network (see `imgclass models`)")
    p.add_argument("--model", default=None, help="your own ONNX model instead of --network (labels from its metadata)")
    p.add_argument("--labels", default=None, help="labels file, one class per line (overrides the model's)")
    p.add_argument("--input-blob", default=None, help="input tensor name of --model (default: its only input)")
    p.add_argument("--output-blob", default=None, help="output tensor name of --model (default: its only output)")
    p.add_argument("--weights", default=None, help="weights file for --network (default: installed or torch hub cache)")
    p.add_argument("--resize", choices=["crop", "stretch"], default=None,
                   help="crop: short side then center crop (what the weights expect); stretch: jetson's whole-frame "
                        "resize (default: the model's own setting)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for inference (default: all cores)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto: a CUDA GPU when there is one and the job is big enough to win back its start "
                        "(videos, streams; a list of images where its estimated wall time is shorter, from this "
                        "machine's measured start-up and speed: --verbose says why), else the CPU")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="on the CPU: fp32 (ONNX Runtime, the same answers everywhere); bf16 or int8 (OpenVINO, where "
                        "the CPU has them: about 2-2.5x faster on AVX-512 BF16/VNNI/AMX CPUs; int8 is calibrated on "
                        "--calibration images); auto (opt-in): measures them once on this machine and keeps the "
                        "fastest within half a point of fp32's top-1 (cached)")
    p.add_argument("--calibration", default=None, metavar="FOLDER",
                   help="images that calibrate --precision int8, a few hundred like the ones you classify (a folder, "
                        "searched recursively, or a quoted glob); default: a trained model's own train images")


def add_result_arguments(p: argparse.ArgumentParser) -> None:
    """How many classes each image reports."""
    p.add_argument("--topk", type=class_count, default=1, help="how many classes to report per image")
    p.add_argument("--threshold", type=confidence, default=0.0,
                   help="drop classes below this confidence, 0..1 as jetson's (0.05: 5%%)")


def class_count(text: str) -> int:
    """argparse type of --topk (``config.check_topk``)."""
    return _argparse_type(check_topk, text)


def confidence(text: str) -> float:
    """argparse type of --threshold (``config.check_threshold``)."""
    return _argparse_type(check_threshold, text)


def _argparse_type(check, text: str):
    try:
        return check(text)
    except ImgclassError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="classify images, folders, globs", formatter_class=HelpFormatter,
                       description="Classify images with a pretrained network or your own ONNX model; prints one line "
                                   "per image, and writes annotated copies when OUTPUT is given.")
    add_arguments(p)
    p.set_defaults(func=run, prefix=None)


def jetson_parser() -> argparse.ArgumentParser:
    """The parser behind ``imagenet`` / ``imagenet.py``, accepting jetson-inference's spellings."""
    p = argparse.ArgumentParser(prog="imagenet", formatter_class=HelpFormatter,
                                description="Classify images (jetson-inference imagenet compatible).")
    add_arguments(p, jetson=True)
    p.set_defaults(func=run, prefix="imagenet")
    return p


def format_line(prefix: str, predictions) -> str:
    """jetson's console line: ``imagenet:  97.31% class #950 (orange)``, top-k joined with ``;``."""
    if not predictions:
        return f"{prefix}:  no class above the threshold"
    return f"{prefix}: " + ";".join(f" {p.confidence * 100:5.2f}% class #{p.index} ({p.label})" for p in predictions)


def run(args) -> int:
    if args.verbose:
        set_log_level("verbose")
    if args.ray is not None and args.ray not in RAY_WORDS and os.path.exists(args.ray):  # `classify --ray images/ r.parquet`
        raise ImgclassError(f"--ray took '{args.ray}' as its address: put --ray after INPUT OUTPUT, or --ray=ADDRESS")
    if args.prefix == "imagenet":  # jetson's imagenet: the tutorial's network and model paths run as typed
        args.network, args.model, note = stand_in(args.network, args.model, args.weights)
        if note:
            print(f"imgclass: note: {note}", file=sys.stderr)
    if args.ray is not None or is_table_output(args.output):
        return run_table(args, ClassifierConfig.from_args(args))
    found = resolve_input(args.input, args.output)
    if isinstance(found, MediaInput) and args.output and is_image_path(args.output) and ImageSink(args.output).single_file:
        raise ImgclassError(f"{args.output}: one image file for the frames of {args.input}; give a folder, or a "
                            "pattern like out_%i.jpg")
    if isinstance(found, MediaInput) or streams_out(args.output):
        return run_frames(args, found)
    paths = found.paths
    sink = ImageSink(args.output) if args.output else None
    targets = sink.targets(paths) if sink is not None else [None] * len(paths)  # refusals come before any work
    net = Classifier(**ClassifierConfig.from_args(args).options(), job=Job(images=len(paths)))
    start, failed, first = time.perf_counter(), 0, None
    score = SubfolderScore(net.labels if args.model is not None and Path(args.input).is_dir() else [])
    results = net.classify_files(paths, args.topk, args.threshold, args.batch_size, keep_images=sink is not None)
    for (path, preds, image), target in zip(tqdm(results, total=len(paths), unit="img", file=sys.stderr, leave=False,
                                                 disable=None if len(paths) > 20 else True), targets):
        if first is None:
            first, started_s = time.perf_counter(), seconds_since_start()
        if isinstance(preds, ImgclassError):
            failed += 1
            print(json.dumps(result_record(str(path), preds)) if args.json else f"imgclass: skipped: {preds}",
                  file=sys.stdout if args.json else sys.stderr, flush=True)
            continue
        score.add(path, preds)
        if sink is not None:
            sink.write(draw_overlay(image, overlay_lines(preds)), target)
        if args.json:
            print(json.dumps(result_record(str(path), preds, **({"output": str(target)} if target else {}))), flush=True)
        else:
            print(format_line(args.prefix or str(path), preds), flush=True)
    seconds = time.perf_counter() - start
    if first is not None and len(paths) > 1:  # what this device costs on this machine: the next "auto" weighs it
        record_job(str(net.engine.device).split(":")[0], len(paths), started_s,
                   (len(paths) - 1) / max(time.perf_counter() - first, 1e-6))
    if len(paths) > 1:
        print(f"imgclass: {len(paths) - failed} of {len(paths)} images classified in {seconds:.1f} s "
              f"({len(paths) / seconds:.1f} img/s) with {net.network_name} ({net.precision})" + score.summary()
              + (f"; {failed} skipped (listed above)" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


class SubfolderScore:
    """Top-1 accuracy over the images whose folder is named after one of the model's classes: a
    dataset folder classified with its own model scores itself, as ``imgclass eval`` does.

    Args:
        labels: the model's classes; [] scores nothing (not a folder of a trained model's dataset).
    """

    def __init__(self, labels: list[str]):
        self.labels, self.hits, self.count = set(labels), 0, 0

    def add(self, path: Path, predictions) -> None:
        """Count one classified image (``predictions`` best first; none above --threshold is a miss)."""
        if Path(path).parent.name in self.labels:
            self.count += 1
            self.hits += bool(predictions) and predictions[0].label == Path(path).parent.name

    def summary(self) -> str:
        """"; top-1 95.0% on 20 images in class folders", or "" when no image was in one."""
        if not self.count:
            return ""
        return f"; top-1 {self.hits / self.count:.1%} on {self.count} images in class folders"


def streams_out(output: str | None) -> bool:
    """Whether OUTPUT is a video or a stream: still images then go through the pipeline as frames."""
    return output is not None and ("://" in output or Path(output).suffix.lower() in VIDEO_SUFFIXES)


def run_frames(args, found: ImageList | MediaInput) -> int:
    """Videos, cameras and streams: the pipeline, one line (or JSON object) per frame."""
    from ..media.liveview import has_display
    from ..media.sinks import is_annotated_video, open_sink
    from ..media.sources import open_source
    from ..pipeline import run_pipeline, status_text

    logging.basicConfig(format="imgclass: %(message)s")  # reconnects, skipped packets, live view address
    output = args.output
    if output is not None:  # `classify clip.mp4 clip.mp4`, or the shell's `clips/*.mp4` making someone's video OUTPUT
        is_video = Path(output).suffix.lower() in VIDEO_SUFFIXES
        check_replaceable(output, file_ids([args.input]), unquoted_glob_hint(args.input, output),
                          is_own=is_annotated_video if is_video else None)  # image outputs: ImageSink checks each
    if output is None and has_display() and not args.headless:
        output = "display://0"  # jetson shows video in a window when there is a screen
    with sigterm_stops_like_ctrl_c() as terminated, open_source(args.input, source_options(args), found) as source, \
            open_sink(output, sink_options(args), frame_rate=source.rate) as sink:
        net = Classifier(**ClassifierConfig.from_args(args).options(), job=Job(stream=True))
        bar = tqdm(total=args.max_frames or source.frame_count or None, unit="frame", disable=None, file=sys.stderr, leave=False)

        def on_result(r) -> None:
            f = r.frame
            if args.json:
                line = json.dumps(result_record(f.name, r.predictions, frame=f.index, timestamp=f.timestamp))
            else:
                line = format_line(args.prefix or f"{f.name} frame {f.index}", r.predictions)
            print(line, flush=True) if bar.disable else bar.write(line, file=sys.stdout)
            bar.update()

        stats = run_pipeline(net, source, sink, topk=args.topk, threshold=args.threshold, smoothing=args.smoothing,
                             batch_size=args.batch_size, max_frames=args.max_frames, on_result=on_result,
                             on_status=lambda st: bar.set_postfix_str(status_text(net, st), refresh=False))
        bar.close()
    where = f"; written to {sink.description}" if sink.description else ""
    dropped = f"; the input dropped {stats.reconnects} time(s) and was reconnected" if stats.reconnects else ""
    print(f"imgclass: {stats.frames} frames in {stats.seconds:.1f} s: {stats.fps:.1f} FPS end to end, network "
          f"{stats.model_fps:.1f} FPS ({net.network_name}){where}{dropped}", file=sys.stderr)
    if stats.interrupted:
        print(f"imgclass: stopped by {'SIGTERM' if terminated.is_set() else 'Ctrl-C'}"
              + (f"; {sink.description} is complete" if sink.description else ""), file=sys.stderr)
        return 143 if terminated.is_set() else 130
    return 1 if source.damage else 0  # a truncated video: its frames were classified, the warning was logged
