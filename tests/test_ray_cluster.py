"""``--ray`` against real Ray processes: joining a cluster that ``ray start --head`` started with Ray's
defaults (token authentication), a killed driver's local Ray gone with it, and ``--ray auto`` with a
dead cluster's address file failing at once.

Every Ray here stays on the loopback address and in private folders: HOME (Ray's token file) and
RAY_TMPDIR (its sessions and cluster address file) are temporary; the processes a test starts are found
by their session id, and only those are killed."""
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import EXAMPLES, run_cli

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs Ray: pip install 'imgclass[ray]'"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes through /proc (Linux)"),
    pytest.mark.slow,
]

RAY = Path(sys.executable).with_name("ray")  # the CLI of the Ray these tests import
PHOTOS = sorted(EXAMPLES.glob("*.jpg"))


@pytest.fixture
def ray_env(monkeypatch, tmp_path):
    """The environment every process of the test inherits: Ray on loopback, with its own HOME and temp
    folder. (A short temp folder: Ray's socket paths inside it must fit 107 characters.)"""
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    home = tmp_path / "home"
    home.mkdir()
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RAY_TMPDIR", temp)
    # Off, Ray keeps 127.0.0.1 as the node address instead of replacing it with this machine's.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    yield home
    shutil.rmtree(temp, ignore_errors=True)


def free_port() -> int:
    """A free TCP port on loopback, from the kernel's ephemeral range (outside Ray's worker ports)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_processes(sid: int) -> dict[int, str]:
    """The live processes (zombies left out) of session ``sid``, with their command lines."""
    found = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, _, _, session = stat.rpartition(")")[2].split()[:4]
        if int(session) == sid and state != "Z":
            found[int(entry)] = cmdline.strip()
    return found


def kill_session(sid: int, within_s: float = 10) -> dict[int, str]:
    """SIGKILL session ``sid`` (a process this test started in a new session, and its descendants); the
    processes still alive after ``within_s``."""
    deadline = time.monotonic() + within_s
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    return left


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.2)


@pytest.fixture
def head(ray_env, tmp_path):
    """``ray start --head`` with Ray's defaults on a free loopback port, after a token was generated at
    ~/.ray/auth_token (a local ``ray.init`` leaves one there): the head turns token authentication on.
    One CPU, no dashboard, to keep it small. Yields its port; kills its session at the end."""
    subprocess.run([RAY, "get-auth-token", "--generate"], check=True, capture_output=True)
    port, log = free_port(), tmp_path / "head.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                                 "--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats",
                                 "--block"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "Ray runtime started" in log.read_text() or proc.poll() is not None, 90, "Ray head")
        assert proc.poll() is None, log.read_text()[-2000:]
        assert "Token authentication is enabled" in log.read_text(), "the head should use token authentication"
        yield port
    finally:
        kill_session(proc.pid)
        proc.wait()


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", None], ids=["address", "alone"])
def test_ray_joins_a_token_authenticated_cluster(head, tmp_path, address):
    """``--ray ADDRESS``, and ``--ray`` alone (as ``ray.init()`` does, the cluster ``ray start`` began
    here: a small job spared Ray's start). The head has one CPU, so one actor says the job ran there."""
    out = tmp_path / "out.parquet"
    ray = ["--ray", address.format(port=head)] if address else ["--ray"]
    result = run_cli("classify", EXAMPLES, out, "--topk", "1", *ray, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "on Ray: 1 actor(s) on 1 node(s)" in result.stderr, result.stderr
    import pyarrow.parquet as pq

    rows = pq.read_table(out).to_pylist()
    assert [row["path"] for row in rows] == [str(p) for p in PHOTOS]
    assert all(row["error"] is None and len(row["labels"]) == 1 for row in rows)


def test_a_small_job_on_a_ray_of_its_own_gives_the_local_table(ray_env, tmp_path):
    """``--ray`` alone where the cluster that ``ray start`` recorded is dead (its address file left): the
    run starts a Ray of its own while it lists the images and loads the model, classifies on it, and
    ends it; the table is the local run's, and the summary says where it ran."""
    import pyarrow.parquet as pq

    stale = Path(os.environ["RAY_TMPDIR"]) / "ray" / "ray_current_cluster"
    stale.parent.mkdir()
    stale.write_text(f"127.0.0.1:{free_port()}")
    local, on_ray = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    assert run_cli("classify", EXAMPLES, local, "--topk", "3").returncode == 0
    result = run_cli("classify", EXAMPLES, on_ray, "--topk", "3", "--ray", timeout=240)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert re.search(r"on Ray: \d+ actor\(s\) on 1 node\(s\)", result.stderr), result.stderr
    assert pq.read_table(on_ray).equals(pq.read_table(local))


def test_a_killed_driver_leaves_no_process_of_its_local_ray(ray_env, tmp_path):
    """The driver runs in a session of its own; every process of its local Ray (the raylet's agents and
    workers included) is in it. After a SIGKILL none may stay, nor the guardian (in a session of its own)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(40):  # 240 images: minutes of work, so the run is under way when killed
        for photo in PHOTOS:
            (folder / f"{i}_{photo.name}").symlink_to(photo)
    driver = subprocess.Popen([sys.executable, "-m", "imgclass", "classify", folder, tmp_path / "out.parquet",
                               "--ray"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: any("ClassifyActor" in cmd for cmd in session_processes(driver.pid).values())
                 or driver.poll() is not None, 120, "classifying actor")
        assert driver.poll() is None, "the driver ended before it could be killed"
        guards = [pid for pid in children(driver.pid) if "guardian.py" in Path(f"/proc/{pid}/cmdline").read_text()]
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 15
        while ((left := session_processes(driver.pid)) or any(map(alive, guards))) and time.monotonic() < deadline:
            time.sleep(0.2)
        print(f"{len(left)} process(es) left {15 - deadline + time.monotonic():.1f} s after the SIGKILL")
        assert not left and not any(map(alive, guards)), (left, guards)
    finally:
        kill_session(driver.pid, within_s=0)  # a failed test's leftovers


def children(pid: int) -> list[int]:
    """The child processes of ``pid``."""
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_auto_with_a_dead_clusters_address_fails_at_once_in_one_line(ray_env, tmp_path):
    """``ray start`` records its address in RAY_TMPDIR/ray/ray_current_cluster; a killed cluster leaves it."""
    stale = Path(os.environ["RAY_TMPDIR"]) / "ray" / "ray_current_cluster"
    stale.parent.mkdir()
    stale.write_text(f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    result = run_cli("classify", PHOTOS[0], tmp_path / "out.parquet", "--ray", "auto", timeout=30)
    assert time.monotonic() - started < 10
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("imgclass: error: --ray auto: nothing answers at 127.0.0.1:"), result.stderr
