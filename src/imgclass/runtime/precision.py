"""Reduced precision on the CPU: ``--precision fp32|bf16|int8|auto``.

fp32 runs on ONNX Runtime; bf16 and int8 on OpenVINO (``runtime/openvino.py`` has the measurements
behind that split). int8 is static quantization calibrated on real images: ``--calibration FOLDER``,
else a trained model's own train images. ``auto`` measures, once per model and machine, each
precision this CPU runs natively, and keeps the fastest whose top-1 stays within MAX_TOP1_DROP of
fp32's on check images; the choice is cached.

Example:
    >>> engine = cpu_engine(source, "int8", preprocess, fp32_engine, calibration="photos/")  # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from ..data import decode_images, find_dataset
from ..errors import ImgclassError, first_line
from ..media.inputs import list_images
from ..preprocess import Preprocess
from .cache import cache_key, discard_entry, engine_path, read_entry, unsealed, warn, write_entry

MAX_TOP1_DROP = 0.005  # half a point of top-1
CALIBRATION_IMAGES = 200  # MinMax ranges settle well before this; more only costs calibration time
CHECK_IMAGES = 500
QUANTIZER_FORMAT = 1  # bump when quantize_int8 changes what it writes
CHOICE_FORMAT = 2  # bump when the way auto measures changes, or its report
NO_CALIBRATION = "--precision int8 needs calibration images: add --calibration FOLDER (a few hundred of your own photos)"

Run = Callable[[np.ndarray], np.ndarray]


@dataclass
class SourceModel:
    """The fp32 ONNX model that every precision is built from.

    Attributes:
        read: returns the model's bytes (a registry network's export comes from the cache).
        key: the key of those bytes: their sha256, or that of what they are exported from.
        stem: readable prefix of its cache entries.
        name: the model in messages.
        dataset: the dataset folder of the training run it comes from (its metadata), if any.
        quantized: the model is int8 already (QDQ): it runs as it is, never quantized again.
    """

    read: Callable[[], bytes]
    key: str
    stem: str
    name: str
    dataset: str | None = None
    quantized: bool = False


def cpu_engine(source: SourceModel, precision: str, preprocess: Preprocess, fp32: Callable[[], object], *,
               calibration: str | Path | None = None, threads: int | None = None,
               input_name: str | None = None, output_name: str | None = None):
    """The engine that runs ``source`` at ``precision`` on the CPU.

    Args:
        source: the fp32 model.
        precision: "fp32", "bf16", "int8" or "auto".
        preprocess: the model's preprocessing (calibration and check images go through it).
        fp32: builds the fp32 engine (ONNX Runtime).
        calibration: a folder (searched recursively), glob or file of images for int8 (default: the
            train images of ``source.dataset``).

    Raises:
        ImgclassError: int8 with no calibration images, a CPU without the precision, a model
            OpenVINO cannot compile.
    """
    from .openvino import OpenVinoEngine

    def build(p: str):
        if p == "fp32":
            return fp32()
        model = int8_model(source, preprocess, calibration) if p == "int8" else source.read()
        return OpenVinoEngine(model, p, source.name, threads=threads, input_name=input_name, output_name=output_name)

    if precision != "auto":
        return build(precision)
    choice, report, engines = auto_choice(source, preprocess, calibration, build, threads)
    warn(f"--precision auto chose {describe(choice, report)}")
    return engines.get(choice) or build(choice)


def calibration_images(calibration: str | Path | None, dataset: str | None) -> list[Path]:
    """Up to CALIBRATION_IMAGES images spread over ``calibration`` (every image in or below a folder,
    a glob, a file), else over the train images of ``dataset``; [] when there are none."""
    if calibration is not None:
        paths = list_images(calibration)
    elif dataset is not None and Path(dataset).is_dir():
        try:
            paths = [p for p, _ in find_dataset(dataset).train]
        except ImgclassError:  # the folder changed since training: as if it were gone
            paths = []
    else:
        paths = []
    return spread(paths, CALIBRATION_IMAGES)


def spread(items: list, count: int) -> list:
    """At most ``count`` of ``items``, evenly spaced (a dataset's files are grouped by class)."""
    if len(items) <= count:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def int8_model(source: SourceModel, preprocess: Preprocess, calibration: str | Path | None) -> bytes:
    """``source`` quantized to int8 (QDQ ONNX bytes), calibrated on its calibration images; cached,
    keyed by the model, the preprocessing and the images (``fingerprints``).

    Raises:
        ImgclassError: no calibration images (NO_CALIBRATION), or none of them readable.
    """
    if source.quantized:
        return source.read()
    import onnxruntime as ort

    paths = required_calibration(calibration, source.dataset)
    key = cache_key(source.key, QUANTIZER_FORMAT, f"onnxruntime {ort.__version__}", preprocess.to_json(),
                    *fingerprints(paths))
    path = engine_path(source.stem, key, ".int8.onnx")
    model = read_entry(path)
    if model is None:
        warn(f"quantizing {source.name} to int8, calibrated on {len(paths)} images "
             f"(first run only; cached in {path.parent})")
        model = write_entry(path, calibrated_int8(source.read(), preprocess, paths, source.name))
    return model


def required_calibration(calibration: str | Path | None, dataset: str | None) -> list[Path]:
    """``calibration_images``, which int8 cannot do without.

    Raises:
        ImgclassError: none (NO_CALIBRATION, and why where a trained model's dataset is gone).
    """
    paths = calibration_images(calibration, dataset)
    if not paths:
        raise ImgclassError(NO_CALIBRATION + (f" (the model's dataset {dataset} is gone)" if dataset else ""))
    return paths


def calibrated_int8(model: bytes, preprocess: Preprocess, paths: list[Path], name: str) -> bytes:
    """``model`` (``name`` in messages) quantized to int8, calibrated on ``paths`` decoded as
    classification decodes them.

    Raises:
        ImgclassError: no calibration image readable, or a model the quantizer cannot handle.
    """
    from .quantize import quantize_int8

    images = decoded(paths, preprocess, "calibration")[0]
    try:
        return quantize_int8(model, images)
    except Exception as e:  # onnxruntime.quantization raises untyped errors for graphs it cannot handle
        raise ImgclassError(f"{name}: int8 quantization failed ({first_line(e)}); use --precision bf16 or fp32") from None


def fingerprints(paths: list[Path]) -> list[str]:
    """Each file's path, size and time of change: the part of a cached result's key that says which
    images it was computed from (their bytes would take seconds to read on every start)."""
    out = []
    for path in paths:
        try:
            st = path.stat()
            out.append(f"{path.resolve()} {st.st_size} {st.st_mtime_ns}")
        except OSError:  # decoding skips it
            out.append(f"{path} unreadable")
    return out


def decoded(paths: list[Path], preprocess: Preprocess, what: str,
            labels: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images decoded and preprocessed exactly as classification does: (NCHW float32, labels).

    Raises:
        ImgclassError: none of them could be read.
    """
    images, _ = decode_images(list(zip(paths, labels or [0] * len(paths))), preprocess, desc=what)
    if len(images) == 0:
        raise ImgclassError(f"none of the {len(paths)} {what} images could be read ({paths[0]}, ...); "
                            "give a folder of photos")
    return preprocess.normalize(images.pixels), images.labels


def auto_choice(source: SourceModel, preprocess: Preprocess, calibration, build: Callable[[str], object],
                threads: int | None) -> tuple[str, dict, dict]:
    """``auto``'s precision for this model on this machine: the cached choice, or measured now.

    Returns:
        (precision, report, the engines built to measure it: empty when the choice was cached).
    """
    import onnxruntime as ort
    from .openvino import cpu_name, cpu_precisions, openvino_version

    native = cpu_precisions()
    calibration_paths = [] if source.quantized else calibration_images(calibration, source.dataset)
    candidates = [p for p in native if p != "int8" or calibration_paths or source.quantized]
    check, labels, what = check_images(source.dataset, calibration_paths)
    key = cache_key(source.key, CHOICE_FORMAT, cpu_name(), os.cpu_count(), threads, openvino_version(),
                    f"onnxruntime {ort.__version__}", preprocess.to_json(), *candidates,
                    *fingerprints(calibration_paths), *fingerprints(check))
    path = engine_path(source.stem, key, ".precision.json")
    saved = cached_choice(path, candidates)
    if saved is not None:
        return *saved, {}
    warn(f"--precision auto: timing {', '.join(candidates)} on this CPU; {checking(len(check), what, labels)} "
         f"(first run only; cached in {path.parent})")
    engines = {p: build(p) for p in candidates}
    images, truth = decoded(check, preprocess, "check", labels) if check else (None, None)
    speed_batch = (images[:8] if images is not None and len(images) >= 8
                   else np.random.default_rng(0).standard_normal((8, 3, preprocess.size, preprocess.size), np.float32))
    choice, report = choose({p: e.run for p, e in engines.items()}, images, truth if labels else None, speed_batch)
    report["check"] = f"{len(images)} {what}" if images is not None else None
    report["labeled"] = labels is not None
    if "int8" in native and "int8" not in candidates:
        report["skipped"] = "int8 not tried: no calibration images (--calibration FOLDER)"
    elif "int8" in candidates and images is None:
        report["skipped"] = "int8 not chosen: no images to check it on (--calibration FOLDER)"
    write_entry(path, json.dumps({"choice": choice, "report": report}).encode())
    return choice, report, {choice: engines[choice]}


def cached_choice(path: Path, candidates: list[str]) -> tuple[str, dict] | None:
    """``auto``'s choice and report cached at ``path``, or None: none there, or an entry that is whole
    (sealed) but not what ``auto_choice`` writes (another version's, or edited), which is removed to be
    measured again: a run never fails on its cache."""
    entry = read_entry(path)
    if entry is None:
        return None
    try:
        saved = json.loads(unsealed(entry))
        choice, report = saved["choice"], saved["report"]
        if choice not in candidates:
            raise ValueError(f"choice {str(choice)[:20]!r}")
        describe(choice, report)  # reads every field a run uses
        return choice, report
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as e:
        discard_entry(path, f"not a choice of --precision auto: {type(e).__name__} {first_line(e, 60)}")
        return None


def check_images(dataset: str | None, calibration_paths: list[Path]) -> tuple[list[Path], list[int] | None, str]:
    """Images that check auto's candidates: a trained model's val images with their labels, else the
    calibration images (fp32's probabilities standing in for labels: see ``top1``), else none.

    Returns:
        (paths, labels or None, what they are in words: "labeled val images" or "calibration images").
    """
    if dataset is not None and Path(dataset).is_dir():
        try:
            val = spread(find_dataset(dataset).val, CHECK_IMAGES)
        except ImgclassError:
            val = []
        if val:
            return [p for p, _ in val], [label for _, label in val], "labeled val images"
    return calibration_paths, None, "calibration images"


def checking(count: int, what: str, labels: list[int] | None) -> str:
    """How auto checks accuracy, in words for the user (the measuring message)."""
    if not count:
        return "no images to check accuracy on, so only bf16 (a rounding-level change) can replace fp32"
    if labels is not None:
        return f"comparing their top-1 on {count} {what}"
    return f"checking how often each gives fp32's top class on {count} {what} (they have no labels)"


def median_seconds_each(fns: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 2) -> dict[str, float]:
    """Median wall time of each of several functions, measured in turns so that a load that comes
    and goes on the machine slows them all alike and their ratios hold."""
    times = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def probabilities(run: Run, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    return np.concatenate([run(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def top1(run: Run, images: np.ndarray, truth: np.ndarray) -> float:
    """Top-1 accuracy of ``run`` on ``images`` (see ``accuracy`` for ``truth``)."""
    return accuracy(probabilities(run, images).argmax(1), truth)


def accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Top-1 accuracy of the classes ``predicted`` (N,).

    Args:
        truth: the labels (N,); or, where there are none, fp32's probabilities (N, classes) standing
            in for them: then each image counts fp32's probability of the class ``run`` picks, the
            expected top-1 if fp32 is calibrated. A flip between two classes fp32 found about as
            likely (an ambiguous photo) costs little, a flip away from a sure class costs a whole image.
    """
    if truth.ndim == 2:
        return float(truth[np.arange(len(predicted)), predicted].mean())
    return float((predicted == truth).mean())


def choose(runs: dict[str, Run], check: np.ndarray | None, truth: np.ndarray | None,
           speed_batch: np.ndarray) -> tuple[str, dict]:
    """The fastest precision of ``runs`` (which holds "fp32") within MAX_TOP1_DROP of fp32's top-1.

    Args:
        runs: precision -> a function from a preprocessed NCHW batch to probabilities.
        check: preprocessed images for the accuracy check, or None: then only bf16 (a rounding-level
            change) may be chosen over fp32, never int8.
        truth: their labels, or None: then fp32's probabilities stand in for them (see ``top1``).
        speed_batch: the batch that times them.

    Returns:
        (precision, report) where report maps each precision to {"images_per_s", "top1", "agreement"}:
        agreement is the fraction of ``check`` where it picks fp32's top class (None without ``check``).

    Example:
        >>> choose({"fp32": ort_run, "int8": ov_run}, val_images, val_labels, val_images[:8])  # doctest: +SKIP
        ('int8', {'fp32': {'images_per_s': 218.0, 'top1': 0.98}, 'int8': {...}})
    """
    if check is not None and truth is None:
        truth = probabilities(runs["fp32"], check)
    seconds = median_seconds_each({p: partial(run, speed_batch) for p, run in runs.items()}, repeats=5, warmup=1)
    predicted = {p: probabilities(run, check).argmax(1) for p, run in runs.items()} if check is not None else {}
    report = {p: {"images_per_s": len(speed_batch) / seconds[p],
                  "top1": accuracy(predicted[p], truth) if predicted else None,
                  "agreement": float((predicted[p] == predicted["fp32"]).mean()) if predicted else None}
              for p in runs}
    reference = report["fp32"]["top1"]

    def accurate(precision: str) -> bool:
        if check is None:
            return precision in ("fp32", "bf16")
        return report[precision]["top1"] >= reference - MAX_TOP1_DROP

    best = max((p for p in runs if accurate(p)), key=lambda p: report[p]["images_per_s"])
    return best, report


def describe(choice: str, report: dict) -> str:
    """One line for the console saying what auto chose and why, e.g. "int8 (541 images/s against fp32's
    218; top-1 98.0% against fp32's 98.0% on 153 labeled val images)", or "bf16 (412 images/s against
    fp32's 218; it gives fp32's top class on 99% of 200 calibration images)"."""
    fp32, chosen = report["fp32"], report[choice]
    if choice == "fp32":
        line = f"fp32 ({fp32['images_per_s']:.0f} images/s; no other precision was both faster and as accurate"
    else:
        line = f"{choice} ({chosen['images_per_s']:.0f} images/s against fp32's {fp32['images_per_s']:.0f}"
        if chosen["top1"] is None:
            line += "; no images to check accuracy on, so only bf16 (a rounding-level change) could be chosen"
        elif report["labeled"]:
            line += f"; top-1 {chosen['top1']:.1%} against fp32's {fp32['top1']:.1%} on {report['check']}"
        else:
            line += f"; it gives fp32's top class on {chosen['agreement']:.0%} of {report['check']}"
    if report.get("skipped"):
        line += f"; {report['skipped']}"
    return line + ")"
