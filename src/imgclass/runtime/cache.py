"""The engine cache. A key is the sha256 of the source bytes plus everything that shapes the
engine (runtime version, providers, precision), so a retrained or re-exported model can never
run a stale engine. Writes are atomic (temp file, fsync, rename) so concurrent runs are safe, and
every entry carries the sha256 of its own bytes, so a truncated or damaged one is rebuilt, not
used. A cache folder that cannot be written costs speed, never the run."""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

from ..errors import ImgclassError
from ..fileio import atomic_write

_built = 0  # entries this process built: its start included work the next run skips


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


def engine_path(stem: str, key: str, suffix: str = ".onnx", folder: str = "engines") -> Path:
    """Where the cache keeps an entry: ``folder`` ("engines": what runs; "sources": the fp32 ONNX
    exports engines are built from) of ``cache_dir()``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    return cache_dir() / folder / f"{safe}-{key}{suffix}"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


# The seal ends an entry: the sha256 of the bytes before it, framed as a length-delimited protobuf
# field with the largest field number. Protobuf parsers keep unknown fields and go on, so a sealed
# ONNX engine is still a valid ONNX file that onnxruntime, onnx and Netron open as is.
_SEAL_MAGIC = b"imgclass-sha256:"
_SEAL_HEAD = _varint((2**29 - 1) << 3 | 2) + _varint(len(_SEAL_MAGIC) + 32) + _SEAL_MAGIC
_SEAL_SIZE = len(_SEAL_HEAD) + 32


def seal(data: bytes) -> bytes:
    """``data`` followed by its seal (see ``is_sealed``)."""
    return data + _SEAL_HEAD + hashlib.sha256(data).digest()


def is_sealed(data: bytes) -> bool:
    """True when ``data`` ends with a seal matching the bytes before it: whole and unchanged."""
    body = memoryview(data)[:-_SEAL_SIZE]
    return (len(data) > _SEAL_SIZE and data[-_SEAL_SIZE:-32] == _SEAL_HEAD
            and hashlib.sha256(body).digest() == data[-32:])


def unsealed(entry: bytes) -> bytes:
    """The bytes ``seal`` was given: an entry without its seal (for entries that are not protobuf, e.g. JSON)."""
    return entry[:-_SEAL_SIZE]


def read_entry(path: Path) -> bytes | None:
    """A cache entry's sealed bytes, or None when it is missing or damaged (a damaged entry is
    removed, so the caller rebuilds it)."""
    try:
        data = path.read_bytes()
    except OSError:  # missing, or a cache folder we may not read: either way, build
        return None
    if is_sealed(data):
        return data
    discard_entry(path, f"{len(data)} bytes")
    return None


def discard_entry(path: Path, why: str) -> None:
    """Say that the entry at ``path`` is damaged (``why``) and remove it, so that the caller rebuilds it."""
    warn(f"{path}: damaged cache entry ({why}); rebuilding it")
    try:
        path.unlink()
    except OSError:  # a read-only cache: write_entry says so
        pass


def write_entry(path: Path, data: bytes) -> bytes:
    """Seal ``data`` and store it at ``path`` atomically; returns the sealed bytes. A cache that
    cannot be written (read-only, full, not a folder) gets a one-line warning, and the run goes on
    without it."""
    global _built
    _built += 1
    sealed = seal(data)
    try:
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(sealed))
    except (OSError, ImgclassError) as e:  # atomic_write words a refused folder for outputs; the OSError says why
        _no_cache(path.parent, getattr(e if isinstance(e, OSError) else e.__context__, "strerror", None) or str(e))
    return sealed


def entries_built() -> int:
    """How many cache entries this process built (exports, optimizations, traces, calibrations)."""
    return _built


def writable_dir(path: Path) -> bool:
    """True when files can be made in ``path`` (created if missing), for a tool that writes its own
    cache there (torch inductor); else a one-line warning and False."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError as e:
        _no_cache(path, e.strerror or str(e))
        return False


def _no_cache(folder: Path, why: str) -> None:
    warn(f"cannot write the cache in {folder} ({why}); running without it (slower start every run): "
         "set IMGCLASS_CACHE to a writable folder")


def warn(message: str) -> None:
    print(f"imgclass: {message}", file=sys.stderr, flush=True)
