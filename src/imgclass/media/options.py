"""Video options with jetson's names (``--input-width``, ``--output-codec``, ``--bitrate``, ...).

One argparse group serves ``imgclass classify``, the ``imagenet`` alias and the
``videoSource``/``videoOutput`` shims (which parse them out of ``sys.argv`` like jetson does).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from fractions import Fraction

from ..errors import ImgclassError
from ..flags import jetson_argv

FLIPS = ("none", "rotate-180", "clockwise", "counterclockwise", "horizontal", "vertical")
INPUT_CODECS = ("h264", "h265", "vp8", "vp9", "mpeg2", "mpeg4", "mjpeg")
OUTPUT_CODECS = ("h264", "h265", "vp8", "vp9", "mpeg4", "mjpeg")
RTSP_PORT = 8554  # jetson's default for rtsp://@:PORT/path outputs
LIVEVIEW_PORT = 8080


@dataclass(frozen=True)
class SourceOptions:
    """How to open an input (jetson's videoOptions for INPUT). Zero/None means "as the source gives it".

    Example:
        >>> SourceOptions(width=1280, height=720, flip="rotate-180").flip
        'rotate-180'
    """

    width: int = 0
    height: int = 0
    rate: float = 0.0
    codec: str | None = None
    flip: str = "none"
    loop: int = 0
    retries: int = 5
    timeout: float = 10.0


@dataclass(frozen=True)
class SinkOptions:
    """How to write an output (jetson's videoOptions for OUTPUT).

    Example:
        >>> SinkOptions(codec="h265", bitrate=4_000_000).codec
        'h265'
    """

    codec: str | None = None
    bitrate: int = 0
    rate: float = 0.0
    port: int | None = None
    host: str = "127.0.0.1"
    headless: bool = False


def add_media_arguments(parser: argparse.ArgumentParser) -> None:
    """Add jetson's video input/output flags as one argument group."""
    g = parser.add_argument_group("video input/output (jetson's videoSource/videoOutput flags)")
    g.add_argument("--input-width", type=int, default=0, help="resize input frames to this width (camera: ask for it)")
    g.add_argument("--input-height", type=int, default=0, help="resize input frames to this height (camera: ask for it)")
    g.add_argument("--input-rate", type=float, default=0.0, help="frames per second to take from the input (drops the rest)")
    g.add_argument("--input-codec", choices=INPUT_CODECS, default=None,
                   help="codec of an rtp:// input (default: h264), or the format to ask a V4L2 camera for")
    g.add_argument("--input-flip", choices=FLIPS, default="none", help="rotate or mirror input frames")
    g.add_argument("--input-loop", "--loop", type=int, default=0,
                   help="play a file input again N more times (-1: forever)")
    g.add_argument("--input-retries", type=int, default=5,
                   help="reconnect attempts when a camera or stream drops (each logged)")
    g.add_argument("--input-timeout", type=float, default=10.0,
                   help="seconds to wait for a camera or stream to connect or send video before giving up "
                        "(or, once it has sent, reconnecting)")
    g.add_argument("--output-codec", choices=OUTPUT_CODECS, default=None,
                   help="codec of a video/stream output (default: h264; vp9 for .webm)")
    g.add_argument("--bitrate", type=int, default=0, help="target bits/s of the encoded output (default: quality-based)")
    g.add_argument("--output-rate", type=float, default=0.0, help="frame rate of the output (default: the input's)")
    g.add_argument("--port", type=int, default=None,
                   help=f"port of the live web view (default: {LIVEVIEW_PORT}); RTSP outputs take theirs from the URI")
    g.add_argument("--host", default="127.0.0.1", help="address the live web view listens on (0.0.0.0: everyone)")
    g.add_argument("--smoothing", type=float, default=0.0,
                   help="EWMA over frames' class scores: a factor 0..1, or N frames (>1 means 1/N); 0 disables")
    g.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: the whole input)")


def source_options(args: argparse.Namespace) -> SourceOptions:
    return SourceOptions(width=args.input_width, height=args.input_height, rate=args.input_rate, codec=args.input_codec,
                         flip=args.input_flip, loop=args.input_loop, retries=args.input_retries,
                         timeout=args.input_timeout)


def sink_options(args: argparse.Namespace) -> SinkOptions:
    return SinkOptions(codec=args.output_codec, bitrate=args.bitrate, rate=args.output_rate, port=args.port,
                       host=args.host, headless=getattr(args, "headless", False))


def parse_argv(argv: list[str] | None) -> argparse.Namespace:
    """Pick the video flags out of a whole command line (jetson's ``videoSource(uri, argv=sys.argv)``).

    Unknown flags and positionals are ignored; jetson's spellings (``--input_width=``) are accepted.

    Example:
        >>> parse_argv(["imagenet.py", "--input_flip=rotate-180", "--topK=3", "in.mp4"]).input_flip
        'rotate-180'
    """
    def error(message: str):  # a script must not exit from inside videoSource(): raise one clear line instead
        raise ImgclassError(f"video options: {message}")

    parser = argparse.ArgumentParser(add_help=False)
    add_media_arguments(parser)
    parser.add_argument("--headless", "--no-display", action="store_true")
    parser.error = error
    args, _unknown = parser.parse_known_args(jetson_argv(list(argv or [])[1:]))
    return args


def as_fraction(rate: float | Fraction) -> Fraction:
    """A frame rate as an exact fraction: 29.97 -> 30000/1001, 25.0 -> 25."""
    return Fraction(rate).limit_denominator(1001)
