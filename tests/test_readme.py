"""The README's ```bash blocks, run as written, in order, in a copy of the repository with the venv
activated as the README says: a newcomer's copy-paste works. Blocks that need what a test cannot
have (the network, a camera, a server left running, minutes of work) are listed in SKIP with why."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

# A unique piece of each block not run -> why. Each must match exactly one block (checked below),
# so the list cannot silently outlive the README.
SKIP = {
    ".venv/bin/python -m pytest": "creates a venv and installs from PyPI (network, minutes); this test runs in the installed one",
    "--index-url https://download.pytorch.org": "downloads torch's CPU wheels (network)",
    "curl -LO": "downloads hymenoptera (network)",
    "imgclass train data/hymenoptera_data": "trains for 1-2 minutes on 2 cores, past this test's budget (test_newcomer.py "
                                            "and test_newcomer_more.py train, classify --model and score a tiny dataset)",
    "clip.mp4 out.mp4": "video files, a camera, RTSP/RTP/HTTP streams that a checkout does not have",
    "imgclass capture /dev/video0": "a camera and a browser page",
    'pip install -e ".[ray]"': "reinstalls imgclass into the shared venv; the test's venv has the ray extra",
    "--ray head:6379": "starts Ray (tens of seconds) and names a cluster",
    'pip install -e ".[serve]"': "reinstalls imgclass into the shared venv; the test's venv has the serve extra",
    "imgclass serve": "a network server that runs until stopped (tests/test_serve.py covers it)",
    "--precision int8 --calibration": "int8 calibration and auto's measurements take minutes on 2 cores, need an "
                                      "AVX-512 VNNI/AMX CPU and a models/fruit run (tests/test_precision.py covers them)",
}


def bash_blocks(text: str) -> list[str]:
    """The body of every ```bash block of ``text``, in order."""
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S)


def skip_reason(block: str) -> str | None:
    return next((why for key, why in SKIP.items() if key in block), None)


def test_every_skip_names_exactly_one_block():
    blocks = bash_blocks((ROOT / "README.md").read_text())
    for key in SKIP:
        assert sum(key in b for b in blocks) == 1, f"SKIP key {key!r} must match exactly one README block"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the repository's files (git's view, as a clone has them), its .venv the running one's."""
    copy = tmp_path_factory.mktemp("readme") / "imgclass"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    (copy / ".venv").symlink_to(Path(sys.prefix))  # what the README's first block made
    return copy


def activated_env(checkout: Path) -> dict[str, str]:
    """The environment after ``source .venv/bin/activate``; imgclass imported from the copy, as an
    editable install in it would."""
    env = dict(os.environ, VIRTUAL_ENV=str(checkout / ".venv"), PYTHONPATH=str(checkout / "src"))
    env["PATH"] = f"{checkout / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    return env


def test_the_readme_blocks_run_as_written(checkout):
    ran = []
    for block in bash_blocks((checkout / "README.md").read_text()):
        if skip_reason(block):
            continue
        out = subprocess.run(["bash", "-e", "-c", block], cwd=checkout, env=activated_env(checkout),
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"README block failed:\n{block}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
        ran.append(block)
    assert any("source .venv/bin/activate" in b for b in ran) and any("imgclass classify" in b for b in ran)
