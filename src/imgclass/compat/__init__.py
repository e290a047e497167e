"""jetson-inference / jetson-utils compatibility: the tutorial's scripts run unchanged.

``jetson_inference``, ``jetson_utils``, ``jetson.inference`` and ``jetson.utils`` re-export
``compat.inference`` and ``compat.utils``. Importing them installs an exception hook so that an
ImgclassError escaping a script prints one clear line instead of a traceback.
"""
import sys

from ..errors import ImgclassError

_previous_hook = sys.excepthook


def _one_line_errors(kind, value, tb):
    if issubclass(kind, ImgclassError):
        print(f"imgclass: error: {value}", file=sys.stderr)
    else:
        _previous_hook(kind, value, tb)


sys.excepthook = _one_line_errors
