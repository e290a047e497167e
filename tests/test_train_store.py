"""The activation store: chunks committed one at a time, a stopped fill resumed where it stopped,
unreadable images skipped, and a run killed while storing features resumed to the same result."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgclass.preprocess import Preprocess
from imgclass.train import store
from imgclass.train.distributed import World

from test_train import TINY, make_dataset, rows

PRE = Preprocess(size=32, resize="stretch")
CPU = World(0, 1, torch.device("cpu"))


def trunk(calls: list[int], stop_at: int | None = None):
    """A stand-in trunk: each image's activation is its mean pixel; raises on call ``stop_at``."""
    def run(x: np.ndarray) -> torch.Tensor:
        calls.append(len(x))
        if stop_at is not None and len(calls) == stop_at:
            raise KeyboardInterrupt
        return torch.from_numpy(x.mean(axis=(1, 2, 3), keepdims=True)[:, :, 0])  # (N, 1, 1)
    return run


@pytest.fixture
def samples(tmp_path) -> list[tuple[Path, int]]:
    out = []
    for i in range(11):
        path = tmp_path / f"img{i:02d}.png"
        Image.fromarray(np.full((40, 40, 3), 20 * i, np.uint8)).save(path)
        out.append((path, i % 3))
    (tmp_path / "img05.png").write_bytes(b"not an image")
    return out


def spec(samples, views=2) -> store.SplitSpec:
    return store.SplitSpec("train", samples, views, (1, 1), "test-trunk")


def test_a_stopped_fill_resumes_at_the_first_chunk_not_done(samples, monkeypatch):
    monkeypatch.setattr(store, "CHUNK", 4)
    calls: list[int] = []
    with pytest.raises(KeyboardInterrupt):  # stopped in the middle of the second of three chunks
        store.cache_split(spec(samples), trunk(calls, stop_at=3), PRE, 4, 1, CPU, "features")
    assert len(list((spec(samples).folder / "done").iterdir())) == 1
    calls.clear()
    split = store.cache_split(spec(samples), trunk(calls), PRE, 4, 1, CPU, "features")
    assert sum(calls) == 2 * (11 - 4 - 1), "the committed chunk is not computed again (nor the unreadable image)"
    fresh = store.cache_split(spec(samples, views=2), trunk([]), PRE, 4, 1, CPU, "features")
    assert np.array_equal(split.batch(np.arange(len(split))), fresh.batch(np.arange(len(fresh))))


def test_rows_labels_views_and_unreadable_images(samples, monkeypatch):
    monkeypatch.setattr(store, "CHUNK", 4)
    split = store.cache_split(spec(samples), trunk([]), PRE, 3, 1, CPU, "features")
    assert len(split) == 10 and [p.name for p, _ in split.bad] == ["img05.png"]
    assert "img05.png" not in {p.name for p in split.paths}
    assert split.labels.tolist() == [i % 3 for i in range(11) if i != 5]
    means = split.batch(np.arange(10))[:, 0, 0].astype(np.float32)
    expected = PRE.normalize(np.stack([np.full((32, 32, 3), 20 * i, np.uint8) for i in range(11) if i != 5]))
    assert np.allclose(means, expected.mean(axis=(1, 2, 3)), atol=1e-3)
    # a mirrored view of a flat image is the same image; the positions' view picks the file
    assert np.array_equal(split.batch(np.arange(10), np.ones(10, int)), split.batch(np.arange(10)))
    assert split.batch(np.array([9, 0, 4])).tolist() == split.batch(np.arange(10))[[9, 0, 4]].tolist()


def test_a_changed_image_gets_a_new_store(samples):
    before = spec(samples).folder
    path = samples[0][0]
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert spec(samples).folder != before


def test_a_disk_too_small_is_one_line(samples, monkeypatch):
    monkeypatch.setattr(store.shutil, "disk_usage", lambda path: type("U", (), {"free": 10})())
    with pytest.raises(store.ImgclassError, match="need .* GB and the disk has .* free; free space, or set IMGCLASS_CACHE"):
        store.cache_split(spec(samples), trunk([]), PRE, 4, 1, CPU, "features")


def test_a_run_killed_while_storing_features_resumes_to_the_same_result(tmp_path):
    dataset = make_dataset(tmp_path / "ds", train_n=12)
    def cmd(model_dir: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "imgclass", "train", str(dataset), "--model-dir", str(model_dir), *TINY,
                "--epochs", "3", "--patience", "9", *extra]

    env = {**os.environ, "IMGCLASS_CACHE": str(tmp_path / "cache")}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # the train split's chunk is committed: the run is storing val's features or fitting the head
        while not list((tmp_path / "cache").glob("features/*/done/*.json")) and proc.poll() is None:
            time.sleep(0.005)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (killed / "checkpoint.pth.tar").exists()
    out = subprocess.run(cmd(killed, "--resume", str(killed / "checkpoint.pth.tar")), env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "was not written yet" in out.stderr and "read back, not computed again" in out.stderr
    full = tmp_path / "full"
    out = subprocess.run(cmd(full), env={**env, "IMGCLASS_CACHE": str(tmp_path / "cache2")}, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert rows(killed) == rows(full)
