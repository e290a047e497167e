"""The README's code blocks (```bash and ```python), run as written, in order, each in a fresh shell
in a copy of the repository (its files as a clone of this working tree has them) with the venv
activated as the README says: a newcomer's copy-paste works, and every block exits 0.

What the README's skipped first block makes, the ``checkout`` fixture makes without the internet: a
``.venv`` of the copy's own, whose packages are the running venv's, with imgclass installed editable
from the copy; so the README's ``pip install -e ".[ray]"`` runs as a user's would (its build backend
from the package registry) and installs there, never into the running venv. Where the README downloads the tutorial's
dataset, the fixture puts a smaller one of the same layout. Blocks that need a camera, a stream or
the internet are in SKIP, with why; the int8 block runs where the CPU has int8 (``cpu_lacks``)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from itertools import product
from pathlib import Path

import pytest

from conftest import ROOT, data_dir
from test_data import COLOURS, make_images

# A unique piece of each block not run -> why. Each must match exactly one block (checked below),
# so the list cannot silently outlive the README.
SKIP = {
    ".venv/bin/python -m pytest": "installs about 7 GB from PyPI (the internet) and runs this whole suite; "
                                  "the checkout fixture makes the same .venv from the running one's packages",
    "--index-url https://download.pytorch.org": "downloads torch's CPU wheels (the internet)",
    "curl -LO": "downloads hymenoptera (the internet); the checkout fixture puts a smaller copy where it unzips",
    "imgclass classify /dev/video0": "a camera and RTSP/RTP/HTTP streams",
    "imgclass capture /dev/video0": "a camera (and a browser on the page it opens)",
}
# A block at most: the slowest, int8's, takes 45 s of CPU, and took 7 minutes on 2 cores at a load of 13.
BLOCK_TIMEOUT_S = 1200


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every ```bash and ```python block of ``text``, in order."""
    return re.findall(r"^```(bash|python)\n(.*?)^```", text, flags=re.M | re.S)


def bash_blocks(text: str) -> list[str]:
    """The body of every ```bash block of ``text``, in order."""
    return [body for language, body in code_blocks(text) if language == "bash"]


def skip_reason(block: str) -> str | None:
    return next((why for key, why in SKIP.items() if key in block), None) or cpu_lacks(block)


def cpu_lacks(block: str) -> str | None:
    """Why ``block`` cannot run on this CPU, or None: int8 runs on OpenVINO where the CPU has it."""
    if "--precision int8" not in block:
        return None
    from imgclass.runtime.openvino import cpu_precisions
    return None if "int8" in cpu_precisions() else "--precision int8: this CPU has no int8 (OpenVINO's check)"


def test_every_skip_names_exactly_one_block():
    blocks = [body for _, body in code_blocks((ROOT / "README.md").read_text())]
    for key in SKIP:
        assert sum(key in b for b in blocks) == 1, f"SKIP key {key!r} must match exactly one README block"


def make_venv(venv: Path, project: Path) -> None:
    """The README's first block's ``.venv``, from the running interpreter's packages instead of PyPI:
    a venv of its own (its ``pip`` installs into it), seeing the running one's site-packages through a
    .pth file (theirs are not read, so the running venv's imgclass stays out), with ``project``
    installed editable in it."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", where], check=True, capture_output=True,
                             text=True).stdout.strip()
    Path(purelib, "running-interpreter.pth").write_text("".join(f"{p}\n" for p in site.getsitepackages()))
    out = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-deps", "-e", str(project)],
                         capture_output=True, text=True)
    assert out.returncode == 0, f"pip install -e {project} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"


def hymenoptera_stand_in(dest: Path) -> None:
    """What the README's download unzips to ``dest``, smaller (seconds of training, not a minute): the
    first 16 train and 8 val photos of each class of ../shared/data/hymenoptera, or where that is
    absent (a fresh clone), generated images of two colours in the same folders."""
    try:
        source = data_dir("hymenoptera")
    except pytest.skip.Exception:
        source = None
    sets, classes = (("train", 16), ("val", 8)), (("ants", "red"), ("bees", "blue"))
    for seed, ((split, count), (name, colour)) in enumerate(product(sets, classes)):
        folder = dest / split / name
        if source is None:
            make_images(folder, COLOURS[colour], count, seed=seed)
        else:
            folder.mkdir(parents=True)
            for photo in sorted((source / split / name).iterdir())[:count]:
                shutil.copy(photo, folder)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the repository's files (git's view, as a clone has them), its .venv and the dataset
    that the README's skipped blocks would have made."""
    copy = tmp_path_factory.mktemp("readme") / "imgclass"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    make_venv(copy / ".venv", copy)
    hymenoptera_stand_in(copy / "data" / "hymenoptera_data")
    return copy


def activated_env(checkout: Path) -> dict[str, str]:
    """The environment after ``source .venv/bin/activate``: ``imgclass``, ``pip`` and ``python`` are the
    copy's (no PYTHONPATH: imgclass is imported through the copy's editable install)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(VIRTUAL_ENV=str(checkout / ".venv"), PATH=f"{checkout / '.venv' / 'bin'}{os.pathsep}{env['PATH']}")
    return env


def stop_group(pgid: int) -> None:
    """Stop what a block left running in its process group (as closing its terminal would): SIGTERM,
    then SIGKILL if it is still there 30 s later."""
    try:
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.2)
            os.killpg(pgid, 0)  # ProcessLookupError once the group is gone
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_block(language: str, block: str, cwd: Path, env: dict[str, str]) -> tuple[int | None, str]:
    """Run one block in a shell of its own (bash -e, or the venv's python); returns its exit status
    (None: it ran past BLOCK_TIMEOUT_S) and its output."""
    command = ["bash", "-e", "-c", block] if language == "bash" else ["python", "-c", block]
    with tempfile.TemporaryFile() as out:
        # a session of its own: a server it starts in the background is found and stopped afterwards,
        # and holds no pipe of this test open
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            status = proc.wait(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            stop_group(proc.pid)
            proc.wait()
        out.seek(0)
        return status, out.read().decode(errors="replace")


def test_the_readme_blocks_run_as_written(checkout):
    env = activated_env(checkout)
    assert (checkout / ".venv" / "bin" / "pip").is_file()  # the README's `pip install` goes to the copy's venv
    ran = []
    for language, block in code_blocks((checkout / "README.md").read_text()):
        if skip_reason(block):
            continue
        status, output = run_block(language, block, checkout, env)
        ended = "ran past the time limit" if status is None else f"exited {status}"
        assert status == 0, f"README block {ended}:\n{block}\n{output[-4000:]}"
        ran.append(block)
    for what in ("source .venv/bin/activate", 'pip install -e ".[ray]"', "imgclass train", "imgclass serve &",
                 "imgclass.Classifier"):
        assert any(what in block for block in ran), f"no block with {what!r} ran"
