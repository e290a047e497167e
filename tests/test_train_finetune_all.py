"""The streaming full fine-tune (``--finetune all``) on generated images on the CPU: the same files and
summary as the tail recipe, named; killed mid-run and resumed to the same results; 2 gloo processes
take the steps 1 takes; augmentation and order depend on (seed, epoch, index) alone."""
import shutil
import subprocess
import time
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import kill_once_written
from test_train import make_dataset, rows, train_cmd
from test_train_ddp import assert_same_run

from imgclass.data import ImageIndex, find_dataset
from imgclass.errors import ImgclassError
from imgclass.models import get_spec
from imgclass.train import CHECKPOINT, TrainConfig, load_checkpoint, resume_config, train
from imgclass.train.checkpoint import save_checkpoint
from imgclass.train.config import FORMAT
from imgclass.train.distributed import World
from imgclass.train.engine import RunRecord, epochs_to_run
from imgclass.train.finetune_all import AugmentedImages, EpochBatches, normalize

EPOCHS = 2
ALL = ["--finetune", "all", "--epochs", str(EPOCHS)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny"), train_n=12)


@pytest.fixture(scope="module")
def full_run(dataset, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """An uninterrupted run, as typed: the reference a killed-and-resumed run must reproduce."""
    model_dir = tmp_path_factory.mktemp("full")
    out = subprocess.run(train_cmd(dataset, model_dir, *ALL), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    return model_dir, out


def test_run_writes_the_tail_recipes_files_and_names_its_recipe(full_run):
    model_dir, out = full_run
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(
        ["checkpoint.pth.tar", "model_best.pth.tar", "labels.txt", "results.csv", "results.png",
         "confusion_matrix.png", "model.onnx", "settings.json"])
    table = rows(model_dir)
    assert [r["epoch"] for r in table] == [str(e) for e in range(1, EPOCHS + 1)]
    assert {r["stage"] for r in table} == {"finetune-all"}
    assert float(table[-1]["val_acc"]) == 100.0
    assert "(--finetune all)" in out.stderr and "finetune-all 100.00%" in out.stdout
    assert load_checkpoint(model_dir / CHECKPOINT)["config"]["finetune"] == "all"
    assert not list(model_dir.glob(".*")), "no temporary file is left behind"


def test_a_run_stopped_before_its_first_checkpoint_resumes_with_its_own_settings(full_run, tmp_path):
    """Killed during its first epoch, a --finetune all run has written only its settings and labels: --resume
    alone (no --finetune flag) starts it again as the same recipe, in its folder."""
    model_dir, _ = full_run
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    for name in ("settings.json", "labels.txt"):
        shutil.copy(model_dir / name, stopped / name)
    cfg = resume_config(stopped / CHECKPOINT, epochs=EPOCHS + 1)
    assert (cfg.finetune, cfg.epochs, cfg.model_dir) == ("all", EPOCHS + 1, str(stopped))


def test_killed_run_resumes_to_the_same_result(dataset, full_run, tmp_path):
    model_dir = tmp_path / "killed"
    ckpt = model_dir / CHECKPOINT
    kill_once_written(train_cmd(dataset, model_dir, *ALL), ckpt)
    assert load_checkpoint(ckpt)["epoch"] < EPOCHS
    # The checkpoint holds --finetune all: the resumed run needs no flag to keep the recipe.
    out = subprocess.run(train_cmd(dataset, model_dir, "--epochs", str(EPOCHS), "--resume", str(ckpt)),
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    assert rows(model_dir) == rows(full_run[0])
    resumed, full = (load_checkpoint(d / CHECKPOINT)["state_dict"] for d in (model_dir, full_run[0]))
    assert all(torch.allclose(resumed[k].float(), full[k].float(), atol=1e-5) for k in full)


def test_two_processes_take_the_steps_one_takes(dataset, full_run, tmp_path):
    model_dir = tmp_path / "two"
    out = subprocess.run(train_cmd(dataset, model_dir, *ALL, "--nproc-per-node", "2"), capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    assert_same_run(rows(full_run[0]), rows(model_dir))
    assert out.stdout.count("best val accuracy") == 1, "rank 0 alone prints the summary"


def test_augmentation_and_order_depend_on_seed_epoch_and_index_alone(dataset):
    ds = find_dataset(dataset)
    images = ImageIndex(np.array([label for _, label in ds.train]), [path for path, _ in ds.train], [])
    augmented = AugmentedImages(images, replace(get_spec("efficientnet-lite0").preprocess, size=64), seed=0)
    x, label = augmented[(5, 1)]
    assert x.shape == (3, 64, 64) and x.dtype == torch.uint8 and label == images.labels[5]
    torch.manual_seed(123)  # the global generator does not matter, and is left as it was
    state = torch.get_rng_state()
    assert torch.equal(augmented[(5, 1)][0], x)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(augmented[(5, 2)][0], x), "another epoch, another augmentation"

    n, batch = 10, 4
    one = list(EpochBatches(n, batch, 0, World(0, 1, torch.device("cpu"))))
    two = [list(EpochBatches(n, batch, 0, World(rank, 2, torch.device("cpu")))) for rank in (0, 1)]
    assert len(one) == 3 and sorted(i for b in one for i, _ in b) == list(range(n))
    for k, whole in enumerate(one):  # every global batch is dealt out over the ranks
        assert sorted(two[0][k] + two[1][k]) == sorted(whole)


def test_recipe_errors_are_one_line(dataset, tmp_path):
    with pytest.raises(ImgclassError, match="--finetune fast: give tail or all"):
        train(TrainConfig(str(dataset), finetune="fast"))
    with pytest.raises(ImgclassError, match="--epochs 0"):
        train(TrainConfig(str(dataset), finetune="all", epochs=0))
    tail = TrainConfig(str(dataset), model_dir=str(tmp_path), resolution=64)  # a tail run's checkpoint, made up
    preprocess = replace(get_spec(tail.arch).preprocess, size=64).to_json()
    ckpt = save_checkpoint(tmp_path / CHECKPOINT, {"format": FORMAT, "config": asdict(tail), "state_dict": {},
                                                   "history": [], "epoch": 1, "preprocess": preprocess})
    with pytest.raises(ImgclassError, match="a run of --finetune tail; resume it as one"):
        train(replace(tail, finetune="all"), resume=ckpt)
    all_layers = save_checkpoint(tmp_path / "all.pth.tar",
                                 {**load_checkpoint(ckpt), "config": asdict(replace(tail, finetune="all"))})
    with pytest.raises(ImgclassError, match="a run of --finetune all; resume it as one"):
        train(tail, resume=all_layers)


def test_normalize_on_the_device_is_preprocess_normalize():
    preprocess = replace(get_spec("efficientnet-lite0").preprocess, size=8, channel_order="bgr")
    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    x = normalize(torch.from_numpy(pixels).permute(0, 3, 1, 2), preprocess)
    assert x.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(x.numpy(), preprocess.normalize(pixels), atol=1e-5)


def test_epochs_stop_on_patience_and_budget_but_never_before_the_first():
    """The one epoch loop of both recipes: the full fine-tune has no epoch 0, so its first epoch runs
    whatever the patience or budget, and then each stop applies as in the tail recipe."""
    def ran(patience: int, budget: float | None, used: float) -> list[int]:
        run = SimpleNamespace(cfg=TrainConfig("data", epochs=5, patience=patience, time=budget), checkpoint=None,
                              started=time.perf_counter() - used)
        record, epochs = RunRecord({}), []
        for epoch in epochs_to_run(run, record, None):
            epochs.append(epoch)
            record.add({"epoch": epoch, "val_acc": 50.0 if epoch == 1 else 40.0, "seconds": 10.0})
        return epochs

    assert ran(patience=0, budget=None, used=0) == [1]
    assert ran(patience=1, budget=None, used=0) == [1, 2]
    assert ran(patience=9, budget=None, used=0) == [1, 2, 3, 4, 5]
    assert ran(patience=9, budget=100, used=95) == [1], "another 10 s epoch would pass the budget"
