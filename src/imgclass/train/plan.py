"""A time budget (``imgclass train --time 5m``): the network and epochs that finish within it.

Each candidate network's speed is measured on this machine, on the dataset's own images, for each
part of the cached-trunk recipe (decode + trunk, tail, a fine-tuning step, the head fit), and kept in
the cache, so the next run plans at once. The plan is the most accurate network (the largest
that fits) that still gets ``GOOD_EPOCHS`` fine-tuning epochs, with as many epochs as fit up to the
default; a budget too short for any fine-tuning gets the smallest network's head fit alone.

Example:
    >>> rates = {"efficientnet-lite0": Rates(start=3, trunk=80, tail=900, step=300, fit=2e6)}
    >>> choose_plan(120, 1000, 200, rates, epochs=4).describe()
    'efficientnet-lite0, cached-trunk recipe, 4 fine-tune epochs: about 49 s'
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ImgclassError
from ..fileio import atomic_write
from ..media.decode import decode_files
from ..models import get_spec
from ..models.registry import find_weights
from ..runtime.cache import cache_dir, cache_key
from .config import CV_ROWS, MIRROR_UP_TO, TrainConfig, format_duration
from .head import fit_head
from .parts import build_network, network_spec, split_model
from .trunk import autocast, trunk_runner

FAMILY = ("efficientnet-lite2", "efficientnet-lite1", "efficientnet-lite0")  # the most accurate first
GOOD_EPOCHS = 2  # a larger network is worth it only with this many fine-tuning epochs
SAMPLE = 32  # images each part is measured on
FIT_SAMPLE = 2048  # feature rows the head fit is measured on (its rate depends on the rows, not the images)
clock: Callable[[], float] = time.perf_counter  # what the measurements are timed with (tests give a fake one)
FORMAT = 2  # bump when what is measured changes


@dataclass(frozen=True)
class Rates:
    """A network's speed on this machine in the cached-trunk recipe.

    Attributes:
        start: seconds to build the network and load its trunk engine.
        trunk: images/s decoded and run through the trunk.
        tail: images/s through the tail alone (pooled features, evaluation).
        step: images/s of fine-tuning steps (tail + head, forward and backward).
        fit: feature rows x L-BFGS iterations per second of the head fit.
    """

    start: float
    trunk: float
    tail: float
    step: float
    fit: float


@dataclass(frozen=True)
class Plan:
    arch: str
    epochs: int
    seconds: float

    def describe(self) -> str:
        what = f"{self.epochs} fine-tune epochs" if self.epochs else "the head fit alone"
        return f"{self.arch}, cached-trunk recipe, {what}: about {format_duration(self.seconds)}"


def predict(rates: Rates, n_train: int, n_val: int, epochs: int) -> float:
    """Seconds a run takes with ``rates``: start, features, head fit, then each epoch and its evaluation."""
    views = 2 if n_train <= MIRROR_UP_TO else 1
    rows = views * n_train
    features = (rows + n_val) / rates.trunk
    # pooled features, then L-BFGS (100 iterations): 12 cross-validation fits on 2/3 of up to CV_ROWS, one on all
    head = rows / rates.tail + 100 * (8 * min(n_train, CV_ROWS) + rows) / rates.fit + (n_train + n_val) / rates.tail
    epoch = n_train / rates.step + n_val / rates.tail
    return rates.start + features + head + epochs * epoch


def choose_plan(budget: float, n_train: int, n_val: int, rates: dict[str, Rates], epochs: int) -> Plan:
    """The plan for ``budget`` seconds (see the module's docstring); ``epochs`` caps the fine-tuning.

    Raises:
        ImgclassError: not even the smallest network's head fit fits the budget.
    """
    def best_for(arch: str) -> Plan | None:
        fitting = [e for e in range(epochs + 1) if predict(rates[arch], n_train, n_val, e) <= budget]
        return Plan(arch, max(fitting), predict(rates[arch], n_train, n_val, max(fitting))) if fitting else None

    plans = [plan for arch in rates if (plan := best_for(arch)) is not None]
    for plan in plans:
        if plan.epochs >= min(GOOD_EPOCHS, epochs):
            return plan
    if plans:
        return plans[-1]
    smallest = list(rates)[-1]
    raise ImgclassError(f"--time {format_duration(budget)}: too short for {n_train + n_val} images on this machine; the "
                        f"quickest run ({smallest}, head fit alone) takes about "
                        f"{format_duration(predict(rates[smallest], n_train, n_val, 0))}")


def candidates(cfg: TrainConfig) -> list[str]:
    """The networks a budget chooses from: the installed ones of the default family (the given one
    alone when the run names its network or weights)."""
    if cfg.weights or cfg.arch not in FAMILY:
        return [cfg.arch]
    return [name for name in FAMILY if find_weights(get_spec(name)) is not None] or [cfg.arch]


def measure(arch: str, cfg: TrainConfig, images: list[Path], device: torch.device) -> Rates:
    """``arch``'s rates on ``device``, timed with ``clock`` on ``images`` (``SAMPLE`` or fewer)."""
    cfg = replace(cfg, arch=arch)
    spec, preprocess, _ = network_spec(cfg)
    model, _ = build_network(spec, cfg, 2)
    parts = split_model(model.to(device).to(memory_format=torch.channels_last).eval())
    trunk_runner(parts, spec, cfg, preprocess, device)  # exports and caches the trunk engine the first time
    t0 = clock()
    run_trunk, _ = trunk_runner(parts, spec, cfg, preprocess, device)  # what a run pays once it is cached
    start = clock() - t0
    t0 = clock()
    pixels = np.stack([x for batch in decode_files(images, preprocess, SAMPLE) for _, x in batch
                       if isinstance(x, np.ndarray)])
    acts = run_trunk(preprocess.normalize(pixels)).to(device)
    trunk = len(pixels) / (clock() - t0)
    with torch.no_grad(), autocast(device):
        t0 = clock()
        feats = parts.tail(acts).float()
        tail = len(acts) / (clock() - t0)
    net = torch.nn.Sequential(parts.tail, parts.head)
    y = torch.arange(len(acts), device=device) % 2
    t0 = clock()
    with autocast(device):
        F.cross_entropy(net(acts).float(), y).backward()
    step = len(acts) / (clock() - t0)
    # The head fit on FIT_SAMPLE rows, after a warm-up: on SAMPLE rows, torch's first calls and per-iteration
    # overhead made it look 25 times slower than on a real dataset (5 minutes predicted for a 40 s fit).
    rows, labels = feats.cpu().repeat(FIT_SAMPLE // len(feats) + 1, 1)[:FIT_SAMPLE], torch.arange(FIT_SAMPLE) % 2
    w0, b0 = torch.zeros(2, feats.shape[1]), torch.zeros(2)
    fit_head(rows, labels, w0, b0, 0.01, max_iter=2)
    t0 = clock()
    fit_head(rows, labels, w0, b0, 0.01, max_iter=20)
    fit = 20 * FIT_SAMPLE / (clock() - t0)
    return Rates(start, trunk, tail, step, fit)


def machine_rates(cfg: TrainConfig, images: list[Path], device: torch.device) -> dict[str, Rates]:
    """Every candidate's rates, measured once per machine and kept in the cache (most accurate first)."""
    path = cache_dir() / "training-rates.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    out, before = {}, dict(known)
    for arch in candidates(cfg):
        side = network_spec(replace(cfg, arch=arch))[1].size  # the input side the run would take (small images: larger)
        key = cache_key(arch, side, device.type, torch.get_num_threads(), torch.__version__, FORMAT)
        if key not in known:
            known[key] = asdict(measure(arch, cfg, images, device))
        out[arch] = Rates(**known[key])
    if known != before:
        try:
            atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(known, indent=1)))
        except OSError:  # a cache that cannot be written costs the next run a measurement, never this one
            pass
    return out


def plan_run(cfg: TrainConfig, n_train: int, n_val: int, images: list[Path],
             device: torch.device) -> tuple[TrainConfig, Plan]:
    """``cfg`` with the network and epochs that finish within ``cfg.time`` seconds, and the plan."""
    plan = choose_plan(cfg.time, n_train, n_val, machine_rates(cfg, images[:SAMPLE], device), cfg.epochs)
    return replace(cfg, arch=plan.arch, epochs=plan.epochs), plan
