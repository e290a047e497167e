"""What defines a classifier (``ClassifierConfig``, the flags ``--network`` ... ``--calibration``) and
how many classes a result reports (``check_topk``, ``check_threshold``): checked here once for the CLI,
tables and their Ray actors, and the server."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .errors import ImgclassError


@dataclass(frozen=True)
class ClassifierConfig:
    """The settings of ``imgclass.Classifier`` (see its docstring), as one value that travels from the
    command line to a results table's Ray actors and the server's replicas.

    Example:
        >>> ClassifierConfig(network="efficientnet-lite1", threads=2).options()["threads"]
        2
    """

    network: str | None = None
    model: str | None = None
    labels: str | None = None
    input_blob: str | None = None
    output_blob: str | None = None
    weights: str | None = None
    resize: str | None = None
    threads: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    calibration: str | None = None

    def __post_init__(self):
        if self.threads is not None and self.threads < 1:
            raise ImgclassError(f"--threads {self.threads}: give 1 or more")
        if self.resize not in (None, "crop", "stretch"):
            raise ImgclassError(f"--resize {self.resize}: use crop or stretch")

    @classmethod
    def from_args(cls, args) -> "ClassifierConfig":
        """From parsed flags of the same names (``cli.classify.add_model_arguments``)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def options(self) -> dict:
        """``Classifier`` keyword arguments."""
        return asdict(self)


def check_topk(value: object) -> int:
    """``value`` (a number or its text) as a class count: a whole number, 1 or more.

    Example:
        >>> check_topk("3")
        3

    Raises:
        ImgclassError: anything else, in words that follow the flag's or parameter's name.
    """
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("+-").isdecimal():
            raise ImgclassError(f"'{value}' is not a whole number")
        value = int(text)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ImgclassError(f"{value!r} is not a whole number")
    if value < 1:
        raise ImgclassError(f"{value} classes: give 1 or more")
    return value


def check_threshold(value: object) -> float:
    """``value`` (a number or its text) as a confidence threshold, 0..1 as jetson's imageNet takes it.

    Example:
        >>> check_threshold("0.05")
        0.05
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ImgclassError(f"'{value}' is not a number") from None
    if not 0 <= number <= 1:  # also refuses nan
        raise ImgclassError(f"{value} is outside 0..1; it is a confidence, not a percentage (0.05: 5%)")
    return number
