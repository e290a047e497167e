"""Dataset collection: a local web page (live view, Space to capture, counts, undo, then train)
and frame extraction from videos. ``imgclass capture`` is its command line.

Names load on first use, so the command line's parser never imports the video stack.
"""
from importlib import import_module

_LAZY = {"Capture": "dataset", "Dataset": "dataset", "validate_class_name": "dataset", "extract_frames": "extract",
         "Extraction": "extract",
         "LiveFeed": "feed", "CaptureApp": "server", "CaptureServer": "server", "serve": "server"}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
