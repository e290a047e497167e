"""Writing files so that nothing is ever half written: a temporary name beside the target, fsync,
then a rename; a Ctrl-C or a crash at any moment leaves the old file or the new one, never a mix."""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

from .errors import ImgclassError


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see half a file."""
    with atomic_output(path) as tmp:
        write(tmp)
    return Path(path)


def check_writable(path: str | Path) -> None:
    """Refuse, before any work, an output that could not be written at the end: a folder in a
    read-only or virtual file system (/proc), a file where a folder should be, no permission.
    Makes the missing folders above ``path``, as writing it would.

    Raises:
        ImgclassError: ``path`` cannot be created, in one line.
    """
    tmp = _temp_name(Path(path))
    _create(Path(path), tmp)
    tmp.unlink()


@contextmanager
def atomic_output(path: str | Path) -> Iterator[str]:
    """A temporary name beside ``path`` to write to; renamed onto ``path`` when the block ends
    normally, deleted when it raises. For outputs written over time (a video), unlike atomic_write.

    Example:
        >>> with atomic_output("out.mp4") as tmp:  # doctest: +SKIP
        ...     write_video(tmp)
    """
    path = Path(path)
    tmp = _temp_name(path)
    try:  # from before the file exists: a Ctrl-C at any point leaves no temporary file
        _create(path, tmp)
        yield str(tmp)
        with open(tmp, "rb+") as f:  # on disk before the rename: a crash never leaves an empty file at path
            os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise _cannot_write(path, e) from None
    except BaseException:
        with suppress(OSError):  # not made (a file where its folder should be), or gone
            tmp.unlink()
        raise


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{path.suffix}")


def _create(path: Path, tmp: Path) -> None:
    """Make ``tmp``, the empty temporary file of ``path``, and the folders above it.

    Raises:
        ImgclassError: it cannot be made (``_cannot_write``).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # created with the user's usual mode (0666 less the umask), as a plain open would
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as e:
        raise _cannot_write(path, e) from None


def _cannot_write(path: Path, error: OSError) -> ImgclassError:
    """Why ``path`` cannot be created, in one line: a file where a folder should be, a read-only
    or virtual file system (/proc), no permission."""
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    why = f"{blocker} is a file, not a folder" if blocker else error.strerror or str(error)
    return ImgclassError(f"{path}: cannot write there ({why}); choose another output path")
