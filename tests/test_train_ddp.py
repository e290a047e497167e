"""Distributed training on CPUs: 2 gloo processes through torchrun reach what 1 process reaches, on one
node and on two (two torchrun launchers meeting at a c10d rendezvous on localhost), rank 0 alone writes
the model dir, and a run resumes on 2 processes from a checkpoint (any run's: checkpoints do not depend
on the number of processes)."""
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import imgclass.train.engine as engine
from imgclass.train import BEST, CHECKPOINT, TrainConfig, load_checkpoint, train

from test_train import make_dataset, rows

EPOCHS, RESUME_FROM = 8, 3
TINY = ["--resolution", "64", "--batch-size", "4", "--epochs", str(EPOCHS), "--patience", "100"]

# Loaded by every process of a run (PYTHONPATH): under torchrun, record each file write under WATCH_DIR
# (file opens for writing, renames, mkdirs) to WATCH_LOG/rank<RANK>, so the test sees which ranks wrote.
SITECUSTOMIZE = """
import os, sys
if "RANK" in os.environ and "WATCH_DIR" in os.environ:
    _watch = os.path.realpath(os.environ["WATCH_DIR"])
    _log = os.path.join(os.environ["WATCH_LOG"], "rank" + os.environ["RANK"])
    _writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and (args[2] or 0) & _writes:
            path = args[0]
        elif event in ("os.rename", "os.mkdir", "os.remove"):
            path = args[1] if event == "os.rename" else args[0]
        else:
            return
        path = os.path.realpath(os.fsdecode(path))
        if path.startswith(_watch):
            with open(_log, "a") as f:
                f.write(f"{event} {path}\\n")

    sys.addaudithook(_hook)
"""


def ddp_cmd(dataset: Path, model_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "imgclass", "train", str(dataset), "--model-dir", str(model_dir), *TINY,
            "--nproc-per-node", "2", *extra]


@pytest.fixture(scope="module")
def watch(tmp_path_factory) -> dict:
    """Environment for the runs: the write recorder on PYTHONPATH, watching the runs' parent folder."""
    site, logs, runs = (tmp_path_factory.mktemp(n) for n in ("site", "writes", "runs"))
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {"env": {**os.environ, "PYTHONPATH": path, "WATCH_DIR": str(runs), "WATCH_LOG": str(logs)},
            "logs": logs, "runs": runs}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny"), train_n=8, val_n=4)


@pytest.fixture(scope="module")
def one(dataset, watch, tmp_path_factory) -> Path:
    """The single-process reference (in this process); its model dir as it was after epoch RESUME_FROM is
    kept in WATCH_DIR/resumed."""
    model_dir, snapshot = tmp_path_factory.mktemp("one"), watch["runs"] / "resumed"
    snapshot.mkdir()
    save = engine.save_checkpoint

    def save_and_snapshot(path: Path, state: dict) -> Path:
        written = save(path, state)
        if Path(path).name == CHECKPOINT and state["epoch"] == RESUME_FROM:
            for name in (CHECKPOINT, BEST):  # model_best is written first
                shutil.copy(model_dir / name, snapshot / name)
        return written

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "save_checkpoint", save_and_snapshot)
        train(TrainConfig(str(dataset), model_dir=str(model_dir), resolution=64, batch_size=4, epochs=EPOCHS,
                          patience=100))
    return model_dir


def assert_same_run(single: list[dict], double: list[dict]) -> None:
    """Equal epochs and accuracies; losses equal but for float rounding (trunk batches differ per rank)."""
    assert [(r["epoch"], r["stage"], r["val_acc"], r["train_acc"]) for r in double] == \
           [(r["epoch"], r["stage"], r["val_acc"], r["train_acc"]) for r in single]
    for a, b in zip(single, double):
        for key in ("train_loss", "val_loss", "lr"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-2, abs=1e-4), (a["epoch"], key)


@pytest.fixture(scope="module")
def two(dataset, watch, one) -> tuple[Path, subprocess.CompletedProcess]:
    """The same run in 2 processes (after ``one``, so the trunk engine is cached)."""
    model_dir = watch["runs"] / "two"
    out = subprocess.run(ddp_cmd(dataset, model_dir), capture_output=True, text=True, timeout=300, env=watch["env"])
    assert out.returncode == 0, out.stderr
    return model_dir, out


def test_two_processes_reach_the_single_process_result(one, two):
    model_dir, out = two
    single, double = rows(one), rows(model_dir)
    print("val_acc 1 process:", [r["val_acc"] for r in single], "2 processes:", [r["val_acc"] for r in double])
    assert_same_run(single, double)
    assert float(double[-1]["val_acc"]) == 100.0
    assert out.stdout.count("best val accuracy") == 1, "rank 0 alone prints the summary"
    assert out.stderr.count("epoch 0 (head)") == 1, "rank 0 alone logs"
    # the same files, and the model.onnx that `imgclass train` exports at its end (`one` is the Python API's run)
    assert sorted(p.name for p in model_dir.iterdir()) == sorted([*(p.name for p in one.iterdir()), "model.onnx"])


def node_cmd(dataset: Path, model_dir: Path, node_rank: int, port: int) -> list[str]:
    """One node's launcher of a 2-node run, 1 process a node, meeting the other at 127.0.0.1:``port``."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--node-rank", str(node_rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
            "--rdzv-id", "imgclass-two-nodes", "-m", "imgclass", "train", str(dataset), "--model-dir", str(model_dir),
            *TINY]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_nodes(dataset, watch, one, tmp_path_factory) -> tuple[Path, str]:
    """The same run on 2 "nodes" of this machine: two launchers started side by side (as on two hosts);
    the rendezvous, not --node-rank, decides which of their processes is rank 0. Returns the model dir
    and both launchers' stdout."""
    model_dir, logs, port = watch["runs"] / "two-nodes", tmp_path_factory.mktemp("launchers"), free_port()
    env = {**watch["env"], "OMP_NUM_THREADS": "1"}  # 2 processes on the cores, as --nproc-per-node does
    launchers = []
    for rank in (0, 1):
        with open(logs / f"node{rank}.out", "w") as out, open(logs / f"node{rank}.err", "w") as err:
            # A session of its own: a hung launcher is killed with its training process.
            launchers.append(subprocess.Popen(node_cmd(dataset, model_dir, rank, port), stdout=out, stderr=err,
                                              env=env, start_new_session=True))
    try:
        for launcher in launchers:
            launcher.wait(timeout=300)
    finally:
        for launcher in launchers:
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()
    for rank, launcher in enumerate(launchers):
        assert launcher.returncode == 0, (logs / f"node{rank}.err").read_text()
    return model_dir, "".join((logs / f"node{rank}.out").read_text() for rank in (0, 1))


def test_two_nodes_reach_the_single_process_result(one, two_nodes, watch):
    model_dir, stdout = two_nodes
    assert_same_run(rows(one), rows(model_dir))
    assert float(rows(model_dir)[-1]["val_acc"]) == 100.0
    assert stdout.count("best val accuracy") == 1, "rank 0 alone prints the summary"
    # the same files, and the model.onnx that `imgclass train` exports at its end (`one` is the Python API's run)
    assert sorted(p.name for p in model_dir.iterdir()) == sorted([*(p.name for p in one.iterdir()), "model.onnx"])
    assert not (watch["logs"] / "rank1").exists(), (watch["logs"] / "rank1").read_text()


def test_rank_0_alone_writes_the_model_dir(two, watch):
    model_dir, _ = two
    written = (watch["logs"] / "rank0").read_text()
    assert str(model_dir / "checkpoint.pth.tar") in written and str(model_dir / "results.png") in written
    assert not (watch["logs"] / "rank1").exists(), (watch["logs"] / "rank1").read_text()
    assert not list(model_dir.glob(".*")), "no temporary file is left behind"


def test_two_processes_resume_a_run(one, two, watch, dataset):
    model_dir = watch["runs"] / "resumed"
    out = subprocess.run(ddp_cmd(dataset, model_dir, "--resume", str(model_dir / CHECKPOINT)), capture_output=True,
                         text=True, timeout=300, env=watch["env"])
    assert out.returncode == 0, out.stderr
    assert load_checkpoint(model_dir / CHECKPOINT)["epoch"] == EPOCHS
    assert rows(model_dir)[:RESUME_FROM + 1] == rows(one)[:RESUME_FROM + 1]
    assert_same_run(rows(one), rows(model_dir))
    assert not (watch["logs"] / "rank1").exists(), (watch["logs"] / "rank1").read_text()
