"""Inputs that must end in one clear line, in bounded time and memory: decompression bombs, table
OUTPUTs that cannot be written or that imgclass did not write, FIFOs in an image list, malformed model
metadata and labels, a damaged ``--precision auto`` cache entry, a pickle given as a checkpoint."""
import argparse
import csv
import json
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

import imgclass
from imgclass.batch import classify_table
from imgclass.errors import ImgclassError
from imgclass.labels import read_labels
from imgclass.media.decode import decode
from imgclass.media.images import load_image
from imgclass.preprocess import Preprocess
from imgclass.runtime.cache import write_entry

from conftest import EXAMPLES, run_cli
from test_runtime import tiny_onnx

ORANGE = EXAMPLES / "orange.jpg"


def one_line_error(out) -> str:
    """The CLI's refusal: exit 1, one line on stderr, no traceback."""
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgclass: error: "), out.stderr
    return lines[0]


# --- 2. decompression bombs ------------------------------------------------------------------------

def png_bomb(path: Path, width: int, height: int) -> Path:
    """A black 1-bit PNG: a few KB on disk, ``width * height`` pixels (x3 bytes) once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


def test_a_png_bomb_is_refused_from_its_header(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png", 12000, 12000)  # 144 megapixels, under Pillow's own limit
    assert bomb.stat().st_size < 100_000
    start = time.perf_counter()
    with pytest.raises(ImgclassError, match=r"bomb.png: 12000x12000 pixels, more than the 40,000,000 imgclass "
                                            r"decodes .*IMGCLASS_MAX_PIXELS"):
        decode(bomb, Preprocess())
    assert time.perf_counter() - start < 0.5, "refused before decoding"


def test_the_pixel_limit_is_one_setting_and_a_large_jpeg_decodes_reduced(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLASS_MAX_PIXELS", "2000000")
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (3000, 2000), (200, 120, 40)).save(photo, quality=80)  # 6 MP: three times the limit
    assert load_image(photo).shape == (1000, 1500, 3)  # DCT-scaled by 1/2: what counts is the decoded size
    assert decode(photo, Preprocess()).shape == (224, 224, 3)
    png_bomb(tmp_path / "scan.png", 2000, 1500)
    with pytest.raises(ImgclassError, match="2000x1500 pixels, more than the 2,000,000"):
        load_image(tmp_path / "scan.png")
    monkeypatch.setenv("IMGCLASS_MAX_PIXELS", "lots")
    with pytest.raises(ImgclassError, match="IMGCLASS_MAX_PIXELS=lots: give the most pixels"):
        load_image(photo)


# --- 5. a table OUTPUT that cannot be written -------------------------------------------------------

def test_an_unwritable_table_output_is_refused_before_any_image_is_classified(tmp_path, monkeypatch):
    monkeypatch.setattr("imgclass.batch.job.Classifier", lambda *a, **k: pytest.fail("classified before the check"))
    (tmp_path / "a_file").write_text("mine")
    cases = {"/proc/out.parquet": "cannot write there", str(tmp_path / "a_file" / "out.csv"): "a_file is a file"}
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "locked").mkdir(mode=0o555)
        cases[str(tmp_path / "locked" / "out.jsonl")] = "Permission denied"
    for output, why in cases.items():
        with pytest.raises(ImgclassError, match=why):
            classify_table(str(EXAMPLES), output)
    line = one_line_error(run_cli("classify", EXAMPLES, "/proc/out.parquet", timeout=60))
    assert "/proc/out.parquet: cannot write there" in line


# --- 10. tables: FIFOs in the list, and OUTPUTs imgclass did not write ------------------------------

def test_a_fifo_device_or_folder_in_the_list_is_an_error_row(tmp_path, classifier):
    os.mkfifo(tmp_path / "pipe.jpg")  # opened, it would wait for a writer for ever
    (tmp_path / "folder.jpg").mkdir()
    listing = tmp_path / "list.txt"
    listing.write_text(f"{ORANGE}\npipe.jpg\nfolder.jpg\n/dev/zero\n{EXAMPLES / 'banana.jpg'}\n")
    out = run_cli("classify", listing, tmp_path / "out.csv", timeout=120)  # a hang fails as TimeoutExpired
    assert "Traceback" not in out.stderr, out.stderr
    with open(tmp_path / "out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["labels"] for r in rows] == ["orange", "", "", "", "banana"]
    assert [r["error"] for r in rows[1:4]] == ["pipe.jpg: not a regular file (a FIFO), not an image",
                                               "folder.jpg: not a regular file (a directory), not an image",
                                               "/dev/zero: not a regular file (a device or socket), not an image"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_only_a_table_imgclass_wrote_is_replaced_not_one_with_its_columns(tmp_path, suffix, classifier):
    mine = tmp_path / f"mine{suffix}"
    header = "path,indices,labels,confidences,error\n" if suffix == ".csv" else ""
    mine.write_text(header + json.dumps(dict(path="a.jpg", indices=None, labels=None, confidences=None, error="x"))
                    + "\n")
    before = mine.read_text()
    with pytest.raises(ImgclassError, match="not a results table imgclass wrote, so it is left alone"):
        classify_table(str(ORANGE), mine)
    assert mine.read_text() == before
    ours = tmp_path / f"ours{suffix}"
    classify_table(str(ORANGE), ours)
    classify_table(str(ORANGE), ours)  # its own table, unchanged: replaced
    ours.write_text(ours.read_text() + "\n")  # edited since: the user's now
    with pytest.raises(ImgclassError, match="not a results table imgclass wrote"):
        classify_table(str(ORANGE), ours)


# --- 13. models, labels, the precision cache, checkpoints -------------------------------------------

FULL = Preprocess(size=8, resize="stretch")


def tiny_model(path: Path, meta: dict[str, str], input_side: int = 8) -> Path:
    """A 3-class tiny ONNX model (``tiny_onnx``) with ``meta`` as its metadata and that input side."""
    model = onnx.load(tiny_onnx(path, np.eye(3)))
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_value = input_side
    onnx.helper.set_model_props(model, meta)
    onnx.save(model, path)
    return path


def preprocess_json(**changes) -> str:
    return json.dumps({**json.loads(FULL.to_json()), **changes})


LABELS = json.dumps(["red", "green", "blue"])
BAD_MODELS = {  # metadata -> the refusal
    "not JSON": ({"imgclass.labels": "['red'"}, "metadata 'imgclass.labels' is not valid JSON"),
    "not a list": ({"imgclass.labels": '{"red": 1}'}, "the labels are not a list of class names"),
    "escapes": ({"imgclass.labels": json.dumps(["red", "\x1b]0;owned\x07\x1b[2J", "blue"])},
                r"label 2 holds control characters \('\\x1b\]0;owned"),
    "missing keys": ({"imgclass.labels": LABELS, "imgclass.preprocess": '{"size": 8}'},
                     "'imgclass.preprocess': not the settings imgclass writes: KeyError"),
    "zero crop": ({"imgclass.labels": LABELS, "imgclass.preprocess": preprocess_json(crop_pct=0)},
                  r"crop_pct 0 is outside \(0, 1\]"),
    "zero std": ({"imgclass.labels": LABELS, "imgclass.preprocess": preprocess_json(std=[0, 1, 1])},
                 "std .* is not above 0"),
    "two means": ({"imgclass.labels": LABELS, "imgclass.preprocess": preprocess_json(mean=[0.5, 0.5])},
                  "mean .* is not 3 numbers"),
    "huge size": ({"imgclass.labels": LABELS, "imgclass.preprocess": preprocess_json(size=20000)},
                  r"input size 20000 is outside 1\.\.4096"),
}


@pytest.mark.parametrize("case", BAD_MODELS)
def test_malformed_model_metadata_is_one_line(tmp_path, case):
    meta, why = BAD_MODELS[case]
    model = tiny_model(tmp_path / "model.onnx", meta)
    with pytest.raises(ImgclassError, match=why):
        imgclass.Classifier(model=model, device="cpu")


def test_a_huge_input_side_without_metadata_is_refused_and_the_cli_says_one_line(tmp_path):
    model = tiny_model(tmp_path / "model.onnx", {"imgclass.labels": LABELS}, input_side=20000)
    with pytest.raises(ImgclassError, match=r"model.onnx: input size 20000 is outside 1\.\.4096"):
        imgclass.Classifier(model=model, device="cpu")
    model = tiny_model(tmp_path / "model.onnx", BAD_MODELS["zero crop"][0])
    assert "crop_pct 0 is outside" in one_line_error(run_cli("classify", "--model", model, ORANGE, timeout=120))


def test_labels_files_are_bounded_printable_and_lose_their_bom(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_bytes("\ufeffred\ngreen\nblue\n".encode())
    assert read_labels(labels) == (["red", "green", "blue"], ["red", "green", "blue"])
    cases = [(("x" * 80 + "\n") * 14_000, "over 1 MB, not a labels file"),  # 1.1 MB: not read whole
             ("a\n" * 200_000, "200,000 labels, over the 100,000 classes"),
             ("red\n\x1b[31mgreen\x1b[0m\n", "label 2 holds control characters"),
             ("\x9b31mred\n", "label 1 holds control characters")]  # C1's one-character CSI
    for text, why in cases:
        labels.write_text(text)
        with pytest.raises(ImgclassError, match=why):
            read_labels(labels)


def test_a_sealed_but_malformed_precision_choice_is_rebuilt(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IMGCLASS_CACHE", str(tmp_path / "cache"))
    model = tiny_onnx(tmp_path / "model.onnx", [[5, -5], [0, 0], [-5, 5]])
    (tmp_path / "labels.txt").write_text("red\nblue\n")
    options = dict(model=model, labels=tmp_path / "labels.txt", device="cpu", precision="auto")
    imgclass.Classifier(**options)
    [entry] = (tmp_path / "cache" / "engines").glob("*.precision.json")
    write_entry(entry, json.dumps({"choice": ["fp32"]}).encode())  # whole (sealed), but not a choice
    capsys.readouterr()
    net = imgclass.Classifier(**options)
    err = capsys.readouterr().err
    assert f"{entry}: damaged cache entry (not a choice of --precision auto" in err and "timing" in err
    assert net.precision in ("fp32", "bf16", "int8")
    imgclass.Classifier(**options)
    assert "timing" not in capsys.readouterr().err, "the rebuilt entry is used"


def test_a_pickle_given_as_a_checkpoint_is_refused_without_torchs_hint(tmp_path):
    import torch

    from imgclass.train.checkpoint import load_checkpoint

    pickled = tmp_path / "checkpoint.pth.tar"
    torch.save({"format": 1, "state_dict": {}, "config": argparse.Namespace()}, pickled)  # a class: code to run
    with pytest.raises(ImgclassError) as error:
        load_checkpoint(pickled)
    message = str(error.value)
    assert "not a training checkpoint imgclass wrote (it holds Python objects" in message, message
    assert "weights_only" not in message and "can still be loaded" not in message, message
    for verb in (["export", tmp_path, "--input", pickled], ["train", tmp_path, "--resume", pickled]):
        line = one_line_error(run_cli(*verb, timeout=120))
        assert "not a training checkpoint imgclass wrote" in line and "weights_only" not in line, line
