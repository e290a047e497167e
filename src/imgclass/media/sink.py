"""The interface every output implements (files, streams, the live view, a window)."""
from __future__ import annotations

import numpy as np


class Sink:
    """Where annotated frames go. ``write(image, timestamp)``; ``close()`` finalizes (also as a context manager).

    Attributes:
        is_streaming: False once the viewer went away (a closed window), as jetson's IsStreaming().
        description: where the frames went, for the summary line.
    """

    is_streaming = True
    description = ""

    def write(self, image: np.ndarray, timestamp: float | None = None) -> None:
        raise NotImplementedError

    def set_status(self, text: str) -> None:
        """A one-line status (model FPS, ...) for sinks that show one: the live view's title."""

    def close(self) -> None:
        """Finish the output; safe to call twice."""

    def abort(self) -> None:
        """Give up after an error: like close(), except a file output leaves nothing behind."""
        self.close()

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.abort() if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt) else self.close()
