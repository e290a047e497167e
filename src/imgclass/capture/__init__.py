"""Dataset collection: a local web page (live view, Space to capture, counts, undo, then train)
and frame extraction from videos. ``imgclass capture`` is its command line."""
from .dataset import Capture, Dataset, validate_class_name
from .extract import extract_frames
from .feed import LiveFeed
from .server import CaptureApp, CaptureServer, serve

__all__ = ["Capture", "CaptureApp", "CaptureServer", "Dataset", "LiveFeed", "extract_frames", "serve",
           "validate_class_name"]
