"""Finished parts of a table job, kept beside OUTPUT until the table is whole, so that a run that was
stopped (Ctrl-C, a lost node, a full disk) continues where it was instead of starting over."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..fileio import atomic_write

MANIFEST = "manifest.json"


class Shards:
    """``OUTPUT.parts/``: each finished range ``[start, end)`` of the job's image list in its own Parquet
    file, and ``manifest.json`` listing those ranges under the job's fingerprint (its inputs and
    settings). A part is written (atomically) before the manifest names it, so the manifest never
    names a missing or half-written part; a manifest of another job (other inputs or settings) is
    discarded with its parts.

    Example:
        >>> shards = Shards(Path("out.parquet"), "sha256...", total=1000)  # doctest: +SKIP
        >>> shards.pending(size=512)  # doctest: +SKIP
        [(0, 512), (512, 1000)]
    """

    def __init__(self, output: Path, fingerprint: str, total: int):
        self.folder = output.with_name(output.name + ".parts")
        self.fingerprint, self.total = fingerprint, total
        self.done: list[tuple[int, int]] = self._read_manifest()

    def _read_manifest(self) -> list[tuple[int, int]]:
        try:
            manifest = json.loads((self.folder / MANIFEST).read_text())
            done = sorted((int(a), int(b)) for a, b in manifest["done"])
            if (manifest["fingerprint"], manifest["total"]) == (self.fingerprint, self.total) and \
                    all(self._part(r).is_file() for r in done):
                return done
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: redo it all
        self.clear()
        return []

    def _part(self, span: tuple[int, int]) -> Path:
        return self.folder / f"part-{span[0]:09d}-{span[1]:09d}.parquet"

    @property
    def finished(self) -> int:
        """Images done: in parts from an earlier run and this one."""
        return sum(b - a for a, b in self.done)

    def pending(self, size: int) -> list[tuple[int, int]]:
        """The ranges not done yet, cut into pieces of at most ``size`` images, in order."""
        gaps, at = [], 0
        for a, b in self.done + [(self.total, self.total)]:
            gaps += [(s, min(s + size, a)) for s in range(at, a, size)]
            at = b
        return gaps

    def save(self, span: tuple[int, int], table: pa.Table) -> None:
        """Keep the rows of ``span`` (its part first, then the manifest naming it; atomic_write makes the
        folder, and says in one line why it cannot)."""
        atomic_write(self._part(span), lambda tmp: pq.write_table(table, tmp))
        self.done = sorted(self.done + [span])
        manifest = {"fingerprint": self.fingerprint, "total": self.total, "done": self.done}
        atomic_write(self.folder / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest)))

    def tables(self) -> Iterator[pa.Table]:
        """The parts in input order, one at a time (call when ``pending`` is empty)."""
        for span in self.done:
            yield pq.read_table(self._part(span))

    def clear(self) -> None:
        """Remove the parts and the manifest, and the folder unless something else is in it."""
        if not self.folder.is_dir():
            return
        for path in [*self.folder.glob("part-*.parquet"), self.folder / MANIFEST]:
            path.unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            pass  # a file of the user's: left alone
