"""Shared test setup: a private engine cache for the session, the real data folder, CLI runner."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The sample photos the repository ships (the README's first command): every checkout has them.
EXAMPLES = ROOT / "examples" / "images"
# ../shared/data beside the checkout; IMGCLASS_DATA points elsewhere (the GPU machine gets a copy).
# A fresh clone has no ../shared: tests that need it skip (data_dir), the rest pass.
DATA = Path(os.environ.get("IMGCLASS_DATA") or ROOT.parent / "shared" / "data")
# Started in the background by a non-interactive shell, pytest inherits SIGINT ignored, and so would
# every process a test starts: the Ctrl-C tests need it delivered (a handled signal resets on exec).
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Engines go to a fresh cache per test session, never the user's (subprocesses inherit it)."""
    old = os.environ.get("IMGCLASS_CACHE")
    os.environ["IMGCLASS_CACHE"] = str(tmp_path_factory.mktemp("imgclass-cache"))
    yield Path(os.environ["IMGCLASS_CACHE"])
    if old is None:
        os.environ.pop("IMGCLASS_CACHE", None)
    else:
        os.environ["IMGCLASS_CACHE"] = old


def data_dir(name: str) -> Path:
    """A folder of ../shared/data, or skip the test saying why: the one gate for every test that needs it."""
    path = DATA / name
    if not path.exists():
        pytest.skip(f"needs ../shared/data ({name}), absent at {path}; IMGCLASS_DATA can point at the data folder")
    return path


@pytest.fixture(scope="session")
def images_dir() -> Path:
    return data_dir("images")


@pytest.fixture(scope="session")
def classifier():
    """The default network, shared by the tests (its export runs once per session)."""
    import imgclass
    return imgclass.Classifier()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny trained run (two generated classes, 64 px, one epoch), trained once for the session."""
    from imgclass.train import TrainConfig, train
    from test_train import make_dataset

    dataset = make_dataset(tmp_path_factory.mktemp("tiny"))
    model_dir = tmp_path_factory.mktemp("tiny-run")
    train(TrainConfig(str(dataset), model_dir=str(model_dir), epochs=1, resolution=64))
    return model_dir


@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory) -> Path:
    """A copy of ``tiny_run`` for one test module to export into."""
    return Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("run"), dirs_exist_ok=True))


def run_python(*args: str, cwd: str | Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` in a subprocess and capture its output."""
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run ``imgclass ARGS`` (as ``python -m imgclass``)."""
    return run_python("-m", "imgclass", *args, **kwargs)


def kill_once_written(command: list[str], path: Path) -> None:
    """Run ``command`` and SIGKILL it the moment ``path`` exists, as a crash or a pulled plug would; the
    test fails if the command ended before it could be killed."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not path.exists() and proc.poll() is None:
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
