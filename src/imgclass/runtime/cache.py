"""The engine cache. A key is the sha256 of the source bytes plus everything that shapes the
engine (runtime version, providers, precision), so a retrained or re-exported model can never
run a stale engine, and writes are atomic (temp file + rename) so concurrent runs are safe."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir() -> Path:
    """``$IMGCLASS_CACHE``, else ``$XDG_CACHE_HOME/imgclass``, else ``~/.cache/imgclass``."""
    root = os.environ.get("IMGCLASS_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "imgclass")
    return Path(root).expanduser()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(*parts: object) -> str:
    """A short stable digest of the parts, e.g. ``cache_key(sha, "onnxruntime 1.20", "fp32")``."""
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:24]


def engine_path(stem: str, key: str, suffix: str = ".onnx") -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    return cache_dir() / "engines" / f"{safe}-{key}{suffix}"
