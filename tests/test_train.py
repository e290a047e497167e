"""Training: a tiny run on generated images, killed mid-run and resumed, its files and checkpoints."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imgclass.train import TrainConfig, load_checkpoint, train
from imgclass.train.head import imagenet_matches

from conftest import kill_once_written, run_cli
from test_data import COLOURS, make_images

TINY = ["--resolution", "64", "--batch-size", "4"]


def make_dataset(root: Path, train_n: int = 8, val_n: int = 3) -> Path:
    for k, (name, colour) in enumerate(COLOURS.items()):
        make_images(root / "train" / name, colour, train_n, seed=k)
        make_images(root / "val" / name, colour, val_n, seed=10 + k)
    return root


def rows(model_dir: Path) -> list[dict]:
    """results.csv without the wall-time column (the only thing allowed to differ between runs)."""
    with open(model_dir / "results.csv") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def train_cmd(dataset: Path, model_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "imgclass", "train", str(dataset), "--model-dir", str(model_dir), *TINY,
            "--epochs", "30", "--patience", "100", *extra]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny"), train_n=12)


@pytest.fixture(scope="module")
def full_run(dataset, tmp_path_factory) -> Path:
    """An uninterrupted run: the reference a killed-and-resumed run must reproduce."""
    model_dir = tmp_path_factory.mktemp("full")
    out = subprocess.run(train_cmd(dataset, model_dir), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return model_dir


def test_run_writes_every_output_and_a_summary(full_run):
    for name in ("checkpoint.pth.tar", "model_best.pth.tar", "labels.txt", "results.csv", "results.png",
                 "confusion_matrix.png", "settings.json"):
        assert (full_run / name).is_file(), name
    assert (full_run / "labels.txt").read_text().split() == ["blue", "red"]
    table = rows(full_run)
    assert [r["epoch"] for r in table] == [str(e) for e in range(31)]
    assert table[0]["stage"] == "head" and {r["stage"] for r in table[1:]} == {"finetune"}
    assert float(table[-1]["val_acc"]) == 100.0
    assert not list(full_run.glob(".*")), "no temporary file is left behind"


def test_checkpoints_load_with_weights_only(full_run):
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
        state = torch.load(full_run / name, map_location="cpu", weights_only=True)
        assert state["classes"] == ["blue", "red"] and state["arch"] == "efficientnet-lite0"
        assert all(isinstance(v, torch.Tensor) for v in state["state_dict"].values())
    assert torch.load(full_run / "checkpoint.pth.tar", weights_only=True)["epoch"] == 30


def test_killed_run_resumes_to_the_same_result(dataset, full_run, tmp_path):
    model_dir = tmp_path / "killed"
    ckpt = model_dir / "checkpoint.pth.tar"
    kill_once_written(train_cmd(dataset, model_dir), ckpt)
    done = load_checkpoint(ckpt)["epoch"]
    assert done < 30
    out = subprocess.run(train_cmd(dataset, model_dir, "--resume", str(ckpt)), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert rows(model_dir) == rows(full_run)
    resumed, full = (load_checkpoint(d / "checkpoint.pth.tar")["state_dict"] for d in (model_dir, full_run))
    assert all(torch.allclose(resumed[k].float(), full[k].float(), atol=1e-5) for k in full)


def test_library_call_head_only(dataset, tmp_path):
    summary = train(TrainConfig(str(dataset), model_dir=str(tmp_path / "lib"), epochs=0, resolution=64))
    assert summary["best_epoch"] == 0 and summary["stages"] == {"head": 100.0}
    assert "precision" in summary["table"] and "red" in summary["table"]


def test_resume_errors_are_one_line(dataset, tmp_path):
    bad = tmp_path / "bad.pth.tar"
    bad.write_bytes(b"not a checkpoint")
    for args in (["--resume", str(bad)], ["--resume", str(tmp_path / "missing.pth.tar")]):
        out = run_cli("train", str(dataset), "--model-dir", str(tmp_path / "x"), *args)
        assert out.returncode == 1 and "Traceback" not in out.stderr and "checkpoint" in out.stderr


def test_class_names_match_imagenet_labels():
    assert imagenet_matches(["ants", "bees", "my mugs", "daisy"]) == [310, 309, None, 985]
