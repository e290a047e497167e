"""``imgclass capture`` (and jetson's ``camera-capture``): collect a labeled dataset in a web page,
or extract frames of a video into a class folder with no page."""
from __future__ import annotations

import argparse
import logging
import sys

from tqdm import tqdm

from . import HelpFormatter
from .. import capture
from ..capture.dataset import AUTO, SETS
from ..errors import ImgclassError
from ..media.options import FLIPS, INPUT_CODECS, SourceOptions

BROWSER = "browser"
CAPTURE_PORT = 8090  # not the live view's 8080: both may run at once


def add_arguments(p: argparse.ArgumentParser, jetson: bool = False) -> None:
    p.add_argument("input", metavar="input_URI" if jetson else "INPUT", nargs="?" if jetson else None,
                   default="csi://0" if jetson else None,
                   help=f"camera (/dev/video0, 0), video file, rtsp:// or http:// stream, or '{BROWSER}' to use only "
                        "the camera of the browser showing the page")
    p.add_argument("--dataset", required=not jetson, default="dataset" if jetson else None, metavar="DIR",
                   help="dataset folder: captures go to DIR/<set>/<class>/, class names to DIR/labels.txt")
    p.add_argument("--labels", default=None, metavar="FILE", help="classes to offer, one per line (more can be typed in the page)")
    page = p.add_argument_group("web page")
    page.add_argument("--host", default="127.0.0.1", help="address the page listens on (0.0.0.0: every machine that can reach this one)")
    page.add_argument("--port", type=int, default=CAPTURE_PORT, help="port of the page (0: any free port)")
    page.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                      help="another origin whose pages may use this one, e.g. https://lab.example.com (repeatable); "
                           "its own names and addresses are always allowed")
    page.add_argument("--model-dir", default=None, metavar="DIR",
                      help="where the page's Train button puts the model (default: models/<dataset folder name>)")
    extract = p.add_argument_group("no page: extract frames of a video file into one class")
    extract.add_argument("--class", dest="label", default=None, metavar="NAME", help="class of the extracted frames")
    extract.add_argument("--every", type=int, default=0, metavar="N", help="keep every Nth frame (0: use --fps)")
    extract.add_argument("--fps", type=float, default=0.0, help="keep this many frames per second of video (0: use --every)")
    extract.add_argument("--set", default="train", choices=[*SETS, AUTO], help="set of the extracted frames (auto: 1 in 5 to val)")
    extract.add_argument("--quality", type=int, default=95, help="JPEG quality of extracted frames (the page has a slider)")
    extract.add_argument("--max-frames", type=int, default=0, help="stop after saving this many frames (0: no limit)")
    video = p.add_argument_group("input")
    video.add_argument(*(["--input-width", "--width"] if jetson else ["--input-width"]), dest="input_width", type=int,
                       default=0, help="resize input frames to this width (camera: ask for it; 0: as it comes)")
    video.add_argument(*(["--input-height", "--height"] if jetson else ["--input-height"]), dest="input_height", type=int,
                       default=0, help="resize input frames to this height (camera: ask for it; 0: as it comes)")
    video.add_argument("--input-flip", choices=FLIPS, default="none", help="rotate or mirror input frames")
    video.add_argument("--input-codec", choices=INPUT_CODECS, default=None,
                       help="format to ask a V4L2 camera for, or the codec of an rtp:// input")


def add_parser(sub) -> None:
    p = sub.add_parser("capture", help="collect a labeled dataset from a camera, video or the browser",
                       formatter_class=HelpFormatter,
                       description="Open a local web page to capture a labeled dataset: pick the set and class, press "
                                   "Space (hold it for a burst). With --class, extract frames of a video instead.")
    add_arguments(p)
    p.set_defaults(func=run)


def jetson_parser() -> argparse.ArgumentParser:
    """The parser behind ``camera-capture``, accepting jetson-inference's spellings."""
    p = argparse.ArgumentParser(prog="camera-capture", formatter_class=HelpFormatter,
                                description="Collect a labeled dataset in a web page (jetson-inference camera-capture "
                                            "compatible; the page replaces the Qt window).")
    add_arguments(p, jetson=True)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    dataset = capture.Dataset(args.dataset, args.labels)
    if args.label is not None:
        return run_extract(args, dataset)
    if args.every or args.fps:
        raise ImgclassError("--every/--fps extract frames into one class: add --class NAME")
    options = SourceOptions(width=args.input_width, height=args.input_height, flip=args.input_flip,
                            codec=args.input_codec)
    app = capture.CaptureApp.from_input(None if args.input == BROWSER else args.input, dataset, options, args.model_dir)

    def ready(server) -> None:
        print(f"imgclass capture: open {server.url} in a browser; saving to {dataset.root} (Ctrl-C to stop)", flush=True)
        if args.host in ("127.0.0.1", "localhost"):
            port = server.port
            print(f"  from another machine: ssh -L {port}:127.0.0.1:{port} <this host>, then open the same URL", flush=True)

    try:
        capture.serve(app, args.host, args.port, args.allow_origin, ready=ready)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how the page is closed, not an error
    print(f"imgclass capture: {dataset.root} holds {plural(dataset.total(), 'image')}; "
          f"train with: {app.state()['train']['command']}")
    return 0


def run_extract(args, dataset: capture.Dataset) -> int:
    if args.input == BROWSER:
        raise ImgclassError("--class extracts frames of a video file; give its path as INPUT")
    logging.basicConfig(format="imgclass: %(message)s")  # a truncated video's warning
    with tqdm(desc="extracting", unit="frame", file=sys.stderr, disable=None, leave=False) as bar:
        saved, damage = capture.extract_frames(args.input, dataset, args.label, every=args.every, fps=args.fps,
                                               set_name=args.set, quality=args.quality, max_frames=args.max_frames,
                                               progress=lambda _: bar.update())
    folders = sorted({f"{dataset.root / c.set / c.label}" for c in saved})
    print(f"imgclass capture: saved {plural(len(saved), 'frame')} of {args.input} to {', '.join(folders) or '(none)'}"
          + ("; the rest could not be decoded (see above)" if damage else ""), file=sys.stderr)
    return 1 if damage else 0  # a truncated video: what it had was saved, but not all the user filmed


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
