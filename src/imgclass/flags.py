"""jetson-inference's command-line conventions, in one place for the CLI, the video options and the
jetson shims: its flag spellings (``--input_blob``, ``--topK``) and its ``--log-level`` names."""
from __future__ import annotations

import logging

from .errors import ImgclassError

# jetson's --log-level thresholds, least to most said, as Python logging levels ("success" sits between)
LOG_LEVELS = {"silent": logging.CRITICAL + 10, "error": logging.ERROR, "warning": logging.WARNING, "success": 25,
              "info": logging.INFO, "verbose": 15, "debug": logging.DEBUG}


def set_log_level(level: str) -> None:
    """jetson's ``--log-level`` / ``Log.SetLevel``: the threshold of imgclass's log (``imgclass.*`` loggers)."""
    value = LOG_LEVELS.get(str(level).lower())
    if value is None:
        raise ImgclassError(f"log level '{level}' is unknown; use one of {', '.join(LOG_LEVELS)}")
    logging.basicConfig(format="imgclass: %(message)s")
    logging.getLogger("imgclass").setLevel(value)


def jetson_argv(argv: list[str]) -> list[str]:
    """Normalize jetson option spellings: ``--input_blob=x`` -> ``--input-blob=x``, ``--topK`` -> ``--topk``.

    Example:
        >>> jetson_argv(["--topK=3", "--input_blob", "data", "in.jpg"])
        ['--topk=3', '--input-blob', 'data', 'in.jpg']
    """
    out = []
    for arg in argv:
        if arg.startswith("--"):
            key, eq, value = arg.partition("=")
            arg = key.replace("_", "-").lower() + eq + value
        out.append(arg)
    return out
