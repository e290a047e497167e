"""A table job on Ray Data: the image list as a dataset, ``map_batches`` on a pool of actors that each
hold one Classifier (an ONNX Runtime session on CPUs, or one GPU's engine), the rows back to the
driver, which keeps them as parts (``Shards``) as they complete.

The actors read and decode the images themselves, through the same ``classify_rows`` as a local run,
so a bad image becomes a row with its error and the results equal the local run's. Every node must
therefore reach the images by the same path or URI (a shared folder, an object store) and have
imgclass installed; only the driver writes the table.

Ray restarts a lost actor (its default); its core then logs one line at start saying that restarts
may fail because of actor arguments in the object store: Ray Data's own arguments, a known Ray issue
(ray-project/ray#57733), harmless here.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from ..classifier import Classifier
from ..config import ClassifierConfig
from ..errors import ImgclassError, first_line
from ..runtime.base import Job
from ..runtime.select import resolve_device
from ..media.inputs import ImageRef
from . import guardian as guardian_script
from .rows import classify_rows
from .table import SCHEMA

NO_RAY = "--ray needs Ray Data: pip install 'imgclass[ray]'"
ACTORS_START_S = 600       # time for the actor pool to start (an autoscaling cluster adds nodes)
AUTH_MODE = "RAY_AUTH_MODE"  # Ray's switch for token authentication: "token" or "disabled"


class ClassifyActor:
    """The ``map_batches`` callable: one Classifier per actor, classifying a batch of (row, name, source)
    into results rows plus their ``row`` and the ``node`` that did them."""

    def __init__(self, classifier: ClassifierConfig, topk: int, threshold: float, batch_size: int):
        import ray

        self.node = ray.get_runtime_context().get_node_id()
        self.topk, self.threshold, self.batch_size = topk, threshold, batch_size
        self.workers = classifier.threads or 1  # decoding threads: as many CPUs as the actor holds
        try:
            self.net = Classifier(**classifier.options())
        except ImgclassError as e:
            # Raised from __call__ instead: Ray retries a failed actor start for ever, and a failed call
            # reaches the driver with this error as its cause.
            self.net = ImgclassError(f"on Ray node {self.node[:8]}: {e}")

    def __call__(self, batch: pa.Table) -> pa.Table:
        if isinstance(self.net, ImgclassError):
            raise self.net
        refs = [ImageRef(*ref) for ref in zip(batch["name"].to_pylist(), batch["source"].to_pylist())]
        table = classify_rows(self.net, refs, self.topk, self.threshold, self.batch_size, workers=self.workers)
        return table.append_column("row", batch["row"]).append_column("node", pa.array([self.node] * len(table)))


class RaySession:
    """A connection to Ray (``ray_session``) made in a thread from the moment this is created, so that
    importing Ray and starting a local one (seconds) overlap what the driver does meanwhile: listing the
    images, building the model (which leaves the engine in the cache for the actors), reading the parts
    already done. The thread holds the session until ``close``: Ray ties the processes of a local Ray
    to the thread that started them (they die with it).

    Args:
        address: "local" (a Ray started here), "here" (``cluster_here``), or a cluster's address; a
            process already connected (``ray.init``) keeps its connection.
    """

    def __init__(self, address: str):
        self._ready, self._closing = threading.Event(), threading.Event()
        self._ray, self._error = None, None
        self._thread = threading.Thread(target=self._hold, args=(address,), name="ray-session", daemon=True)
        self._thread.start()

    def _hold(self, address: str) -> None:
        try:
            with ray_session(address) as ray:
                self._ray = ray
                self._ready.set()
                self._closing.wait()
        except BaseException as e:  # raised in the caller's thread, by ``ray``
            self._error = e
        finally:
            self._ready.set()

    def ray(self):
        """The ``ray`` module, connected, once it is.

        Raises:
            ImgclassError: what ``ray_session`` raised (no Ray installed, a cluster out of reach).
        """
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self._ray

    def close(self) -> None:
        """End the session (a local Ray shuts down), once its start is over."""
        self._closing.set()
        self._thread.join()


class RayJob:
    """Classify parts of an image list on a Ray cluster with a pool of ``ClassifyActor``.

    Args:
        session: the connection to the cluster (``RaySession``).
        classifier: the Classifier's settings; ``threads`` is per actor, ``device`` "auto" means
            the GPUs when the cluster has any.
        actors: how many (default: ``actor_plan``'s).
    """

    def __init__(self, session: RaySession, classifier: ClassifierConfig, *, topk: int, threshold: float,
                 batch_size: int, actors: int | None = None):
        if actors is not None and actors < 1:
            raise ImgclassError(f"--ray-actors {actors}: give 1 or more")
        self.session, self.classifier, self.actors = session, classifier, actors
        self.topk, self.threshold, self.batch_size = topk, threshold, batch_size
        self.nodes: set[str] = set()  # the nodes whose actors returned rows

    def describe(self) -> str:
        """Where the job ran, for the summary: "on Ray: 2 actor(s) on 2 node(s)"."""
        return f"on Ray: {self.actors} actor(s) on {len(self.nodes)} node(s)" if self.nodes else "on Ray"

    def parts(self, refs: Sequence[ImageRef], todo: list[tuple[int, int]]
              ) -> Iterator[tuple[tuple[int, int], pa.Table]]:
        """Each span of ``todo`` with its rows (in order, as ``classify_rows`` gives them) once all are in."""
        if not todo:
            return
        import_ray_data()
        ray = self.session.ray()
        with data_context(ray):
            device, threads, self.actors, resources = actor_plan(ray, self.classifier.device, self.classifier.threads,
                                                                 self.actors)
            rows = [{"row": i, "name": refs[i].name, "source": refs[i].source} for a, b in todo for i in range(a, b)]
            dataset = ray.data.from_items(rows, override_num_blocks=block_count(len(rows), self.actors,
                                                                                self.batch_size)).map_batches(
                ClassifyActor, batch_size=None, batch_format="pyarrow",
                fn_constructor_kwargs={"classifier": replace(self.classifier, device=device, threads=threads),
                                       "topk": self.topk, "threshold": self.threshold, "batch_size": self.batch_size},
                compute=ray.data.ActorPoolStrategy(size=self.actors), **resources)
            try:
                yield from self._assemble(dataset.iter_batches(batch_size=None, batch_format="pyarrow"), todo)
            except ray.exceptions.RayError as e:
                raise job_error(e) from None

    def _assemble(self, batches: Iterator[pa.Table], todo: list[tuple[int, int]]
                  ) -> Iterator[tuple[tuple[int, int], pa.Table]]:
        """Group rows that come back in any order by span; a span is yielded once it is whole."""
        starts = np.array([a for a, _ in todo])
        waiting: dict[int, list[pa.Table]] = {}
        for batch in batches:
            self.nodes.update(batch["node"].unique().to_pylist())
            which = np.searchsorted(starts, batch["row"].to_numpy(), side="right") - 1
            for k in np.unique(which):
                waiting.setdefault(k, []).append(batch.filter(pa.array(which == k)))
                a, b = todo[k]
                if sum(len(t) for t in waiting[k]) == b - a:
                    rows = pa.concat_tables(waiting.pop(k)).sort_by("row")
                    yield todo[k], rows.select(SCHEMA.names).cast(SCHEMA)


def block_count(rows: int, actors: int, batch_size: int) -> int:
    """How many blocks ``rows`` images go in: one actor call per block, of about 8 inference batches
    (decode overlaps inference inside it), as many for every actor, so that the actors finish
    together (a small job of 7 blocks on 2 actors had one of them idle for its last block); never
    more blocks than images. (``from_items`` builds the blocks here; ``from_arrow`` would start tasks
    to describe them.)

    Example:
        >>> block_count(400, 2, 8), block_count(4000, 2, 8), block_count(3, 2, 8)
        (8, 64, 2)
    """
    per_actor = -(-rows // (batch_size * 8 * actors))
    return min(rows, actors * per_actor)


def actor_plan(ray, device: str, threads: int | None, actors: int | None) -> tuple[str, int, int, dict]:
    """Where and how many actors run, from the cluster's live nodes: one per GPU for CUDA (``device`` "auto"
    means CUDA when the cluster has GPUs); on CPUs ``threads`` per actor (default 1) and as many actors as
    the nodes fit. One thread an actor because separate sessions scale better than one session's threads:
    on 2 cores, 2 actors of 1 thread classify about 15% faster than 1 actor of 2 threads.

    Returns:
        device, threads per actor, actors, and the resources each actor asks Ray for.

    Raises:
        ImgclassError: CUDA without a GPU in the cluster, or more threads than any node has CPUs.
    """
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    gpus = int(sum(n.get("GPU", 0) for n in nodes))
    device = resolve_device(device, Job(), cuda=gpus > 0)  # the cluster's GPUs, not this machine's
    if device == "cuda":
        if not gpus:
            raise ImgclassError("--device cuda: the Ray cluster has no GPU; drop --device for its CPUs")
        return device, threads or 1, actors or gpus, {"num_gpus": 1, "num_cpus": 1}
    cpus = [int(n["CPU"]) for n in nodes if n.get("CPU", 0) >= 1]
    if not cpus:
        raise ImgclassError("the Ray cluster has no CPU to run on; add a node with CPUs")
    threads = threads or 1
    if threads > max(cpus):
        raise ImgclassError(f"--threads {threads} per actor: the largest Ray node has {max(cpus)} CPUs; give fewer")
    return device, threads, actors or max(1, sum(c // threads for c in cpus)), {"num_cpus": threads}


@contextmanager
def ray_session(address: str):
    """The ``ray`` module, connected: to the caller's session if there is one (left open), else to
    ``address``, shut down when the block ends. "local": a new Ray on this machine, no dashboard, under a
    ``guardian`` so that none of its processes outlives this one; "auto": the cluster Ray finds here;
    "here": that cluster when one answers, else a new Ray (``cluster_here``).

    Raises:
        ImgclassError: Ray is not installed, or the cluster cannot be reached.
    """
    try:
        import ray
    except ImportError:
        raise ImgclassError(NO_RAY) from None
    if ray.is_initialized():
        yield ray
        return
    if address == "here":
        address = cluster_here()
    if address == "auto":
        address = running_cluster()
    if address != "local":
        check_listening(address)
        token_auth(ray)
    with guardian(ray) if address == "local" else nullcontext():
        local = {"include_dashboard": False} if address == "local" else {}
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, **local)
        except (ConnectionError, ValueError, RuntimeError, ray.exceptions.RayError) as e:
            raise ImgclassError(f"cannot join the Ray cluster at {address} ({first_line(e)}); start one with "
                                "`ray start --head`, or give --ray local for a Ray of this run") from None
        try:
            yield ray
        finally:
            if address == "local":
                stop_autoscaler(ray)
            ray.shutdown()


def import_ray_data():
    """Import Ray Data: apart from ``ray`` and its start (``RaySession``), so that its half second
    overlaps a local Ray's start (which waits on the processes it starts).

    Raises:
        ImgclassError: Ray Data, or a package it needs, is missing.
    """
    try:
        import ray.data  # noqa: F401
    except ImportError:
        raise ImgclassError(NO_RAY) from None


def stop_autoscaler(ray) -> None:
    """Kill the autoscaler monitor of a Ray started here, before ``ray.shutdown``: a Ray on one machine
    adds no nodes, and stopped after the GCS (Ray's order) the monitor spends a second reporting its own
    end to the GCS that is gone, a second of every ``--ray`` run. Through Ray's private node object;
    a Ray without it shuts down as it always did."""
    try:
        monitors = ray._private.worker._global_node.all_processes.get("monitor", [])
    except AttributeError:
        return
    for info in monitors:
        info.process.kill()
        info.process.wait()


def running_cluster() -> str:
    """The address ``--ray auto`` stands for, found as Ray finds it (RAY_ADDRESS, else the cluster that
    ``ray start`` last started here, as its temp folder records, else a GCS process running here), and
    answering: ``ray.init`` would retry an address left by a dead cluster for two minutes.

    Raises:
        ImgclassError: no cluster found, or a dead one.
    """
    try:
        address = ray_lookup("auto")
    except ConnectionError:
        raise ImgclassError("--ray auto: no Ray cluster runs on this machine; start one with `ray start --head`, "
                            "or give --ray alone for a Ray of this run") from None
    try:
        check_listening(address)
    except ImgclassError as e:
        raise ImgclassError(f"--ray auto: {e}") from None
    return address


def cluster_here() -> str:
    """What ``--ray`` alone stands for, as ``ray.init()`` with no address decides: RAY_ADDRESS, else the
    cluster that ``ray start`` last began on this machine, else "local" (a Ray for this run). Joining a
    cluster that is already up spares a small job Ray's start and end (on the 2-core VM, 400 images: 2.4 s
    over the local run instead of 6.8 s). A recorded cluster that no longer answers, a dead one's file, is
    passed over for a local Ray, where ``ray.init`` would retry it for two minutes; a RAY_ADDRESS is the
    user's choice, joined or an error."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    address = ray_lookup(None)
    if address in (None, "local"):
        return "local"
    try:
        check_listening(address, timeout=1.0)
    except ImgclassError:
        return "local"
    return address


def ray_lookup(address: str | None) -> str | None:
    """Ray's own lookup of the cluster ``address`` (None or "auto") stands for (``ray._private.services``),
    without its warning of several clusters here: the callers say which they took."""
    from ray._private import services

    logger = logging.getLogger(services.__name__)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return services.get_ray_address_from_environment(address, None)
    finally:
        logger.setLevel(level)


def token_auth(ray) -> None:
    """Switch Ray's token authentication on to join a cluster, as ``ray start --head`` did to start it:
    when RAY_AUTH_MODE is unset and a token is at hand (RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH
    names, or ~/.ray/auth_token, which a local ``ray.init`` writes). ``ray.init`` does so itself for
    address "auto" but not for an explicit one, and then fails after 20 s ("Failed to connect"). A cluster
    without authentication ignores the token; an explicit RAY_AUTH_MODE stands. The setting stays for
    this process and those it starts, as Ray's own does.
    """
    raylet = ray._raylet
    if not hasattr(raylet, "AuthenticationTokenLoader") or AUTH_MODE in os.environ or not token_at_hand():
        return  # a Ray before 2.52 (no token authentication), a mode chosen, or no token
    os.environ[AUTH_MODE] = "token"
    raylet.Config.initialize("")  # Ray read RAY_AUTH_MODE at import: read it again, as Ray does for "auto"


def token_at_hand() -> bool:
    """Whether one of the token sources Ray documents holds a token."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token"
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(path).is_file()


@contextmanager
def guardian(ray) -> Iterator[None]:
    """A ``guardian`` process for the local Ray started in the block: once the block ends, or this
    process dies (by SIGKILL too), it kills whatever of that Ray is left. Linux only (it reads /proc);
    elsewhere Ray's own clean-up alone.
    """
    if not sys.platform.startswith("linux"):
        yield
        return
    # Its own session: a Ctrl-C at the terminal reaches the driver, not the guardian.
    watch = subprocess.Popen([sys.executable, guardian_script.__file__, os.path.dirname(ray.__file__)],
                             stdin=subprocess.PIPE, start_new_session=True)
    try:
        yield
    finally:
        watch.stdin.close()
        watch.wait(timeout=guardian_script.SWEEP_S + 5)


def check_listening(address: str, timeout: float = 5.0) -> None:
    """Fail at once, in one line, when nothing listens at a cluster ADDRESS (``host:port`` or
    ``ray://host:port``): ``ray.init`` would retry it for many minutes.

    Raises:
        ImgclassError: a malformed address, or no answer at it.
    """
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ImgclassError(f"--ray {address}: give a cluster's HOST:PORT (or ray://HOST:PORT, or auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ImgclassError(f"nothing answers at {address} ({e.strerror or e}); is the Ray cluster up "
                            "(`ray start --head` prints its address)? Or give --ray local for a Ray of this run"
                            ) from None


@contextmanager
def data_context(ray):
    """Ray Data settings while a job runs: no progress bars or execution logs on the terminal (imgclass
    shows its own, and ``job_error`` says a failure in one line); and work starts once the whole actor
    pool is up, so every actor gets its share from the start (a pool the cluster cannot hold fails
    after ``ACTORS_START_S`` instead of waiting for ever)."""
    context, logger = ray.data.DataContext.get_current(), logging.getLogger("ray.data")
    saved = context.enable_progress_bars, context.wait_for_min_actors_s, logger.level
    context.enable_progress_bars, context.wait_for_min_actors_s = False, ACTORS_START_S
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        context.enable_progress_bars, context.wait_for_min_actors_s = saved[:2]
        logger.setLevel(saved[2])


def job_error(e: Exception) -> ImgclassError:
    """A failed Ray job in one line: the ImgclassError an actor raised (a model that does not load on a
    node), else the last line of Ray's report (the exception that ended it)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # Ray colours its reports
    ours = re.findall(r"imgclass\.errors\.ImgclassError: (.+)", text)
    if ours:
        return ImgclassError(ours[-1])
    last = [line.strip() for line in text.splitlines() if line.strip()]
    return ImgclassError(f"the Ray job failed: {last[-1][:300] if last else type(e).__name__}")
