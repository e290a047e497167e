"""Classify a video, camera or stream frame by frame:
source -> preprocess -> runtime -> postprocess (smoothing) -> overlay -> sink.

Three threads overlap the work so the CPU stays busy: the reader decodes and preprocesses,
the classifier runs the network on whatever frames are ready (a small batch when the input is
faster than the model, one frame at a time when it is live), and the caller's thread draws
the overlay and encodes. Frames keep their order; a bounded queue between stages keeps memory flat.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from .classifier import Classifier, Prediction
from .media.sinks import Sink
from .media.sources import Frame, Source
from .overlay import draw_overlay, overlay_lines
from .parallel import Prefetch


@dataclass
class FrameResult:
    """A frame and its classes (after smoothing and the threshold), best first."""

    frame: Frame
    predictions: list[Prediction]


@dataclass
class Stats:
    """What a run did. ``model_fps``: frames per second of the network alone (jetson's Network FPS);
    ``fps``: frames per second end to end (decode to encode)."""

    frames: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    interrupted: bool = False
    reconnects: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def model_fps(self) -> float:
        return self.frames / self.model_seconds if self.model_seconds else 0.0


class Smoother:
    """EWMA of the class probabilities over frames, with jetson's imageNet semantics.

    ``factor`` in (0, 1) weighs the newest frame; a value > 1 means "over N frames" (1/N);
    0 or 1 disables it. The first frame starts the average.

    Example:
        >>> s = Smoother(2)  # over 2 frames: factor 0.5
        >>> s(np.array([1.0, 0.0])).tolist(), s(np.array([0.0, 1.0])).tolist()
        ([1.0, 0.0], [0.5, 0.5])
    """

    def __init__(self, factor: float):
        self.factor = 1 / factor if factor > 1 else factor
        self.average: np.ndarray | None = None

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        if not 0 < self.factor < 1:
            return probs
        if self.average is None:
            self.average = np.array(probs, dtype=np.float32)
        else:
            self.average += self.factor * (probs - self.average)
        return self.average.copy()


def classify_frames(net: Classifier, frames: Iterable[Frame], *, topk: int = 1, threshold: float = 0.0,
                    smoothing: float = 0.0, batch_size: int = 8, stats: Stats | None = None) -> Iterator[FrameResult]:
    """Classify frames in order; preprocessing runs in a reader thread, ahead of the network.

    The network takes the frames that are ready, up to ``batch_size`` at once: a file (faster than
    the model) gets full batches, a live camera one frame at a time (no added latency).

    Example:
        >>> for r in classify_frames(Classifier(), open_source("clip.mp4")):  # doctest: +SKIP
        ...     print(r.frame.index, r.predictions[0].label)
    """
    stats = stats if stats is not None else Stats()
    smoother = Smoother(smoothing)
    def network_input(f: Frame) -> np.ndarray:
        return net.prepare(f.file) if f.file is not None else net.preprocess(f.image)

    with Prefetch(((f, network_input(f)) for f in frames), size=2 * batch_size, name="decode") as reader:
        for first in reader:
            batch = [first, *reader.ready(batch_size - 1)]
            start = time.perf_counter()
            probs = net.probabilities(np.stack([x for _, x in batch]))
            stats.model_seconds += time.perf_counter() - start
            for (frame, _), p in zip(batch, probs):
                yield FrameResult(frame, net.predictions(smoother(p), topk, threshold))


def run_pipeline(net: Classifier, source: Source, sink: Sink, *, topk: int = 1, threshold: float = 0.0,
                 smoothing: float = 0.0, batch_size: int = 8, max_frames: int = 0, overlay: bool = True,
                 on_result: Callable[[FrameResult], None] | None = None,
                 on_status: Callable[[Stats], None] | None = None) -> Stats:
    """Classify every frame of ``source``, draw the classes on it and write it to ``sink``.

    Ctrl-C (KeyboardInterrupt) ends the run early with ``stats.interrupted`` set; the sink is
    finalized either way (an mp4 is complete and playable). The caller closes the source.

    Args:
        on_result: called with each FrameResult in order (print a line, collect JSON, ...).
        on_status: called about once a second with the running Stats (a status line).
        max_frames: stop after this many frames (0: all).

    Example:
        >>> with open_source("in.mp4") as src, open_sink("out.mp4", frame_rate=src.rate) as out:  # doctest: +SKIP
        ...     stats = run_pipeline(Classifier(), src, out)
        >>> print(f"{stats.fps:.1f} FPS end to end, network {stats.model_fps:.1f} FPS")  # doctest: +SKIP
    """
    stats = Stats()
    start = last_status = time.perf_counter()
    classified = classify_frames(net, _limited(source, max_frames), topk=topk, threshold=threshold,
                                 smoothing=smoothing, batch_size=batch_size, stats=stats)
    try:
        with Prefetch(classified, size=2 * batch_size, name="classify") as results:
            for result in results:
                if overlay:
                    sink.write(draw_overlay(result.frame.image, overlay_lines(result.predictions)), result.frame.timestamp)
                else:
                    sink.write(result.frame.image, result.frame.timestamp)
                stats.frames += 1
                if on_result is not None:
                    on_result(result)
                now = time.perf_counter()
                if now - last_status >= 1.0:
                    stats.seconds, last_status = now - start, now
                    sink.set_status(status_text(net, stats))
                    if on_status is not None:
                        on_status(stats)
                if not sink.is_streaming:  # the viewer closed the window
                    break
    except KeyboardInterrupt:
        stats.interrupted = True
    finally:
        stats.seconds = time.perf_counter() - start
        stats.reconnects = source.reconnects
        sink.close()
    return stats


def status_text(net: Classifier, stats: Stats) -> str:
    """``efficientnet-lite0 | network 82 FPS | 61 FPS end to end``."""
    return f"{net.network_name} | network {stats.model_fps:.0f} FPS | {stats.fps:.0f} FPS end to end"


def _limited(frames: Iterable[Frame], max_frames: int) -> Iterator[Frame]:
    for frame in frames:
        if max_frames and frame.index >= max_frames:
            return
        yield frame
