"""Frames of a filmed video into a class folder, no page: for people who filmed their objects."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

from ..errors import ImgclassError
from ..media.sources import open_source
from .dataset import Capture, Dataset


class Extraction(NamedTuple):
    """What ``extract_frames`` saved, and why the video ended early ("" when it was whole: see
    ``Source.damage``); the frames before the damage are saved either way."""

    captures: list[Capture]
    damage: str


def extract_frames(video: str | Path, dataset: Dataset, label: str, *, every: int = 0, fps: float = 0.0,
                   set_name: str = "train", quality: int = 95, max_frames: int = 0,
                   progress: Callable[[Capture], None] | None = None) -> Extraction:
    """Save every ``every``-th frame (or ``fps`` frames per second of video) as captures of ``label``.

    Args:
        video: a video file (or any input ``open_source`` reads).
        dataset: where the frames go.
        label: the class; validated, and added to labels.txt if new.
        every: keep frames 0, N, 2N, ...; exclusive with ``fps``.
        fps: keep this many frames per second of video time, by timestamp.
        set_name: train, val, test or auto (about 1 in 5 to val).
        quality: JPEG quality 1..100.
        max_frames: stop after this many saved frames (0: the whole video).
        progress: called with each saved capture.

    Example:
        >>> ds = Dataset("data/bottles")  # doctest: +SKIP
        >>> saved, damage = extract_frames("bottle.mp4", ds, "bottle", every=30)  # 1189 frames  # doctest: +SKIP
        >>> len(saved), damage  # doctest: +SKIP
        (40, '')
    """
    if bool(every) == bool(fps):
        raise ImgclassError("give exactly one of --every N (every Nth frame) or --fps F (frames per second)")
    if every < 0 or fps < 0:
        raise ImgclassError("--every and --fps must be positive")
    label = dataset.add_class(label)
    saved: list[Capture] = []
    # --fps is the source's own frame-dropping (one frame per 1/fps slot of the timestamps)
    with open_source(video, rate=fps) as source:
        if source.is_live:
            raise ImgclassError(f"{video}: a live input never ends; extract from a video file, or run the page "
                                "(leave out --class) to capture by hand")
        for frame in source:
            if every and frame.index % every:
                continue
            saved.append(dataset.save(frame.image, set_name, label, quality))
            if progress is not None:
                progress(saved[-1])
            if max_frames and len(saved) >= max_frames:
                break
    return Extraction(saved, source.damage)
