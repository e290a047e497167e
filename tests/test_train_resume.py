"""Resuming a run: settings and folder from the checkpoint, Ctrl-C's resume command, damaged or
unwritable checkpoints."""
import errno
import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from imgclass.cli import main
from imgclass.data import SPLIT_FILE
from imgclass.errors import ImgclassError
from imgclass.train import load_checkpoint
from imgclass.train.checkpoint import save_checkpoint

from test_data import COLOURS, make_class_folders, make_images
from test_train import TINY as TRAINED_TINY, rows

# Random-weight networks: the trunk runs in torch, no ONNX export; resuming works the same.
TINY = [*TRAINED_TINY, "--no-pretrained"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset of class folders only, so split by content; a run of 1 epoch in a custom folder)."""
    root = tmp_path_factory.mktemp("resume")
    dataset = make_class_folders(root / "ds", per_class=5)
    assert main(["train", str(dataset), "--model-dir", str(root / "custom"), *TINY, "--epochs", "1",
                 "--patience", "5"]) == 0
    return dataset, root / "custom"


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def read_split(run: Path) -> dict[str, set[str]]:
    doc = json.loads((run / SPLIT_FILE).read_text())
    return {part: {path for path, _ in doc[part]} for part in ("train", "val")}


def test_resume_without_flags_keeps_the_checkpoints_settings_and_folder(first_run, tmp_path, monkeypatch, capsys):
    dataset, run = first_run
    run = copy_run(run, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(dataset), "--resume", str(run / "checkpoint.pth.tar")]) == 0
    assert "nothing to train: the run has done epoch 1 of 1" in capsys.readouterr().err
    assert [r["epoch"] for r in rows(run)] == ["0", "1"]
    assert not (tmp_path / "models").exists(), "a resumed run stays in its folder"


def test_resume_with_epochs_trains_up_to_them_in_the_same_folder_with_new_images(first_run, tmp_path, monkeypatch):
    dataset, run = first_run
    run = copy_run(run, tmp_path)
    dataset = Path(shutil.copytree(dataset, tmp_path / "ds"))
    before = read_split(run)
    make_images(tmp_path / "new", COLOURS["red"], 3, seed=99)
    for i, image in enumerate(sorted((tmp_path / "new").iterdir())):
        image.rename(dataset / "red" / f"new{i}.png")
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(dataset), "--resume", str(run / "checkpoint.pth.tar"), "--epochs", "2"]) == 0
    state = load_checkpoint(run / "checkpoint.pth.tar")
    assert state["epoch"] == 2 and [r["epoch"] for r in rows(run)] == ["0", "1", "2"]
    config = state["config"]
    assert (config["epochs"], config["patience"], config["resolution"], config["batch_size"]) == (2, 5, 64, 4)
    assert not (tmp_path / "models").exists(), "a resumed run stays in its folder"
    # The split is rewritten: the first run's images keep their side, the new ones join one side or the other.
    after = read_split(run)
    assert before["train"] <= after["train"] and before["val"] <= after["val"]
    assert after["train"] | after["val"] == before["train"] | before["val"] | {f"red/new{i}.png" for i in range(3)}


def test_resume_errors_are_one_line(first_run, tmp_path, capsys):
    dataset, run = first_run
    empty = tmp_path / "checkpoint.pth.tar"
    empty.touch()
    cases = {"empty file (0 bytes)": ["--resume", str(empty)],
             "keeps its network": ["--resume", str(run / "checkpoint.pth.tar"), "--arch", "resnet-18"],
             "best model only": ["--resume", str(run / "model_best.pth.tar")]}
    for expected, args in cases.items():
        assert main(["train", str(dataset), *args]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err


def test_ctrl_c_prints_the_command_that_resumes(first_run, tmp_path):
    dataset, run = first_run
    ckpt = copy_run(run, tmp_path) / "checkpoint.pth.tar"
    first = ckpt.stat().st_mtime_ns
    # Resumed, so no head fit to wait for; interrupted once it has written a checkpoint of its own.
    proc = subprocess.Popen([sys.executable, "-m", "imgclass", "train", str(dataset), "--resume", str(ckpt),
                             "--epochs", "500", "--patience", "1000"], stderr=subprocess.PIPE, text=True)
    try:
        while ckpt.stat().st_mtime_ns == first and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("imgclass: interrupted; continue with: ") and "Traceback" not in err
    command = shlex.split(last.split("continue with: ")[1])
    assert command == ["imgclass", "train", str(dataset), "--resume", str(ckpt)]
    assert 1 < load_checkpoint(ckpt)["epoch"] < 500
    assert not list(ckpt.parent.glob(".*")), "no temporary file is left behind"


def test_a_progress_line_is_written_whole_with_its_newline(monkeypatch):
    # A Ctrl-C lands between two writes, never inside one: a line and its newline written apart once
    # left the interrupt's message on the end of an epoch's line.
    from imgclass.train import engine

    class Writes:
        def __init__(self):
            self.calls = []

        def write(self, s):
            self.calls.append(s)

        def flush(self):
            pass

    stderr = Writes()
    monkeypatch.setattr(sys, "stderr", stderr)
    engine.log("epoch 2 (finetune): train loss 0.392")
    assert [c for c in stderr.calls if c] == ["epoch 2 (finetune): train loss 0.392\n"]


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth.tar"
    save_checkpoint(path, {"epoch": 1, "weights": torch.zeros(1000)})
    before = path.read_bytes()

    def half_then_full(self, data):
        with open(self, "wb") as f:
            f.write(bytes(data)[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    with pytest.raises(ImgclassError) as info:
        save_checkpoint(path, {"epoch": 2, "weights": torch.ones(1000)})
    message = str(info.value)
    assert "\n" not in message and "No space left on device" in message and f"--resume {path}" in message
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth.tar"], "no half-written file is left"
