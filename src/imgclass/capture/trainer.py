"""The page's "train" button: run ``imgclass train`` then ``imgclass export`` as subprocesses,
keep their output for the page, and load the exported model for a live preview."""
from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from ..errors import ImgclassError

MAX_LINES = 200  # the page shows the tail; a long run must not grow memory without bound
TERMINAL_ROWS, TERMINAL_COLUMNS = 40, 100  # the progress bars' "terminal": about the log box's width
_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")  # cursor moves of nested progress bars, colours


def train_commands(dataset: str | Path, model_dir: str | Path) -> list[list[str]]:
    """The two commands that turn the dataset into ``model_dir/model.onnx``, as the user would type them.

    Example:
        >>> [shlex.join(c) for c in train_commands("data/mugs", "models/mugs")]
        ['imgclass train data/mugs --model-dir models/mugs', 'imgclass export --model-dir models/mugs']
    """
    return [["imgclass", "train", str(dataset), "--model-dir", str(model_dir)],
            ["imgclass", "export", "--model-dir", str(model_dir)]]


def shell_line(commands: list[list[str]]) -> str:
    """The commands as one copy-pasteable shell line."""
    return " && ".join(shlex.join(c) for c in commands)


class TrainJob:
    """Run commands one after another in the background, collecting their output line by line.

    A progress bar's carriage-return updates replace one ``progress`` line instead of piling up.
    ``imgclass`` as the first word runs this Python's imgclass (``python -m imgclass``), so
    the page trains with the same install that serves it.

    Example:
        >>> job = TrainJob([["imgclass", "train", "data/mugs", "--model-dir", "models/mugs"]])  # doctest: +SKIP
        >>> job.start(); job.wait(); job.state  # doctest: +SKIP
        'done'
    """

    def __init__(self, commands: list[list[str]], on_success=None):
        self.commands, self.on_success = commands, on_success
        self.state = "idle"  # idle -> running -> done | failed
        self.lines: list[str] = []
        self.progress = ""
        self.error: str | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self.state == "running":
                raise ImgclassError("training is already running; wait for it to finish")
            self.state, self.lines, self.progress, self.error = "running", [], "", None
            self._thread = threading.Thread(target=self._run, name="imgclass-capture-train", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            for command in self.commands:
                self._add(f"$ {shlex.join(command)}")
                argv = [sys.executable, "-m", "imgclass", *command[1:]] if command[0] == "imgclass" else command
                self._proc, output = spawn(argv)
                with output:
                    self._pump(output)
                if (rc := self._proc.wait()) != 0:
                    raise ImgclassError(f"`{shlex.join(command)}` failed (exit {rc}); see its output above")
            if self.on_success is not None:
                self.on_success()
            self.state = "done"
        except (ImgclassError, OSError) as e:
            self.error, self.state = str(e), "failed"

    def _pump(self, stream) -> None:
        """Keep finished lines; show the unfinished one (a progress bar redrawing itself after ``\\r``)."""
        pending, overwritten = b"", ""
        while chunk := _read(stream):
            pending += _ANSI.sub(b"", chunk)
            hold = pending.endswith(b"\r")  # maybe half of a \r\n: wait for the next byte
            *parts, pending = re.split(rb"(\r\n|\r|\n)", pending[:-1] if hold else pending)  # text, sep, ..., rest
            pending += b"\r" if hold else b""
            for text, sep in zip(parts[0::2], parts[1::2]):
                line = text.decode("utf-8", "replace").rstrip()
                if sep == b"\r":
                    overwritten = line or overwritten
                else:
                    if line:
                        self._add(line)
                    overwritten = ""
            self.progress = pending.decode("utf-8", "replace").strip() or overwritten
        if pending.strip():
            self._add(pending.decode("utf-8", "replace").strip())

    def _add(self, line: str) -> None:
        with self._lock:
            self.lines = (self.lines + [line])[-MAX_LINES:]
            self.progress = ""

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        """End a running command (the server is shutting down)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def status(self) -> dict:
        with self._lock:
            return {"state": self.state, "lines": list(self.lines), "progress": self.progress, "error": self.error}


def spawn(argv: list[str]) -> tuple[subprocess.Popen, io.RawIOBase]:
    """Start ``argv`` with stdout and stderr on one stream to read.

    A pseudo-terminal where the OS has one: progress bars (tqdm) hide themselves when writing to a
    pipe, and the page wants to show them. A plain pipe elsewhere (Windows).
    """
    try:
        import fcntl
        import pty
        import struct
        import termios
        parent, child = pty.openpty()
        # a terminal of 0x0 makes tqdm hide every bar ("more hidden"): give it a size
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", TERMINAL_ROWS, TERMINAL_COLUMNS, 0, 0))
    except (ImportError, OSError):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                bufsize=0)
        return proc, proc.stdout
    try:
        proc = subprocess.Popen(argv, stdout=child, stderr=child, stdin=subprocess.DEVNULL)
    finally:
        os.close(child)
    return proc, os.fdopen(parent, "rb", buffering=0)


def _read(stream) -> bytes:
    """What the child wrote so far (blocks until something comes); b"" once it has exited."""
    try:
        return stream.read(4096)
    except OSError:  # a pseudo-terminal whose other end closed (EIO on Linux)
        return b""


class Preview:
    """The freshly trained model, giving every class's confidence for a frame.

    Example:
        >>> Preview("models/mugs/model.onnx").scores(frame)  # doctest: +SKIP
        [{'label': 'blue mug', 'confidence': 0.91}, {'label': 'red mug', 'confidence': 0.09}]
    """

    def __init__(self, model: str | Path):
        from ..classifier import Classifier  # onnxruntime loads only once there is a model to preview

        self.model = Path(model)
        self.classifier = Classifier(model=self.model)

    def scores(self, image: np.ndarray | bytes) -> list[dict]:
        """All classes in label order with their confidence (0..1), for a frame or a posted JPEG's bytes
        (decoded as every route decodes a file)."""
        net = self.classifier
        x = net.prepare(image, "posted image")[None] if isinstance(image, bytes) else net.preprocess.batch([image])
        probs = net.probabilities(x)[0]
        return [{"label": label, "confidence": float(p)} for label, p in zip(self.classifier.labels, probs)]
