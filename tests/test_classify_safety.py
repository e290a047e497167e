"""Classifying never loses a user's file, and a file gets the same confidences by every route."""
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import imgclass
from imgclass.errors import ImgclassError
from imgclass.media.images import ImageSink, open_image

from conftest import EXAMPLES, run_cli


def one_line_error(out, *words: str) -> None:
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgclass: "), out.stderr
    assert "Traceback" not in out.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def two(tmp_path) -> Path:
    """A folder of two photos, as ``two/*.jpg`` matches them."""
    folder = tmp_path / "two"
    folder.mkdir()
    shutil.copy(EXAMPLES / "orange.jpg", folder / "a.jpg")
    shutil.copy(EXAMPLES / "banana.jpg", folder / "b.jpg")
    return folder


@pytest.fixture
def large_jpeg(tmp_path) -> Path:
    """A JPEG big enough to be decoded at a reduced scale for the network (as phone photos are)."""
    path = tmp_path / "large.jpg"
    Image.open(EXAMPLES / "banana.jpg").resize((1440, 1440), Image.BICUBIC).save(path, quality=92)
    return path


def test_an_unquoted_glob_never_overwrites_the_second_photo(two):
    before = {p.name: p.read_bytes() for p in two.iterdir()}
    out = run_cli("classify", *sorted(str(p) for p in two.iterdir()))  # what the shell makes of two/*.jpg
    one_line_error(out, "b.jpg", "quote", f"'{two}/*.jpg'")
    assert {p.name: p.read_bytes() for p in two.iterdir()} == before  # unchanged, and no temporary file left


def test_an_unquoted_glob_of_many_photos_says_to_quote_it(two):
    shutil.copy(two / "a.jpg", two / "c.jpg")
    before = {p.name: p.read_bytes() for p in two.iterdir()}
    out = run_cli("classify", *sorted(str(p) for p in two.iterdir()))  # three files: one more than INPUT OUTPUT
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "the shell expanded a glob; quote it" in out.stderr and "Traceback" not in out.stderr
    assert {p.name: p.read_bytes() for p in two.iterdir()} == before


@pytest.mark.parametrize("cwd, args", [("two", ["a.jpg", "a.jpg"]), ("two", ["a.jpg", "./a.jpg"]),
                                       (".", ["two/a.jpg", "two/../two/a.jpg"]), (".", ["two", "two"])])
def test_output_that_is_the_input_is_refused(two, cwd, args):
    before = (two / "a.jpg").read_bytes()
    out = run_cli("classify", *args, cwd=two.parent / cwd)
    one_line_error(out, "is an input file")
    assert (two / "a.jpg").read_bytes() == before and sorted(p.name for p in two.iterdir()) == ["a.jpg", "b.jpg"]


def test_a_rerun_replaces_only_its_own_output(two, tmp_path):
    for _ in range(2):  # the second run replaces the annotated copy the first one wrote
        out = run_cli("classify", str(two / "a.jpg"), str(tmp_path / "out.jpg"))
        assert out.returncode == 0, out.stderr
    assert Image.open(tmp_path / "out.jpg").size == Image.open(two / "a.jpg").size


def test_frames_never_replace_a_photo_that_was_there(tmp_path):
    shutil.copy(EXAMPLES / "orange.jpg", tmp_path / "0.jpg")
    before = (tmp_path / "0.jpg").read_bytes()
    sink = ImageSink(tmp_path)
    with pytest.raises(ImgclassError, match="not an annotated copy"):
        sink.write(np.zeros((8, 8, 3), np.uint8))
    assert (tmp_path / "0.jpg").read_bytes() == before


def test_a_video_is_never_written_over_itself(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not really a video: refused before it is opened")
    out = run_cli("classify", "clip.mp4", "./clip.mp4", cwd=tmp_path)
    one_line_error(out, "is an input file")
    assert clip.read_bytes() == b"not really a video: refused before it is opened"


@pytest.mark.parametrize("output", ["notes.txt/out.jpg", "/proc/out.jpg"])
def test_output_where_no_file_can_be_made_is_one_line(tmp_path, output):
    if output.startswith("/proc") and not Path("/proc/self").exists():
        pytest.skip("no /proc on this system")
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    out = run_cli("classify", str(EXAMPLES / "orange.jpg"), output, cwd=tmp_path)
    one_line_error(out, "cannot write there", output)
    assert (tmp_path / "notes.txt").read_text() == "a file, not a folder"


def test_directory_output_keeps_the_input_names_and_json_names_it(two, tmp_path):
    out = run_cli("classify", str(two / "*.jpg"), "annotated/", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(Path(r["input"]).name, r["output"]) for r in rows] == [("a.jpg", "annotated/a.jpg"), ("b.jpg", "annotated/b.jpg")]
    assert sorted(p.name for p in (tmp_path / "annotated").iterdir()) == ["a.jpg", "b.jpg"]
    assert Image.open(tmp_path / "annotated" / "b.jpg").size == Image.open(two / "b.jpg").size
    out = run_cli("classify", str(two / "a.jpg"), "--json")
    assert "output" not in json.loads(out.stdout)


def test_same_names_in_several_folders_stay_apart(tmp_path):
    for folder in ["x", "y"]:
        (tmp_path / folder).mkdir()
        shutil.copy(EXAMPLES / "orange.jpg", tmp_path / folder / "photo.jpg")
    sink = ImageSink(tmp_path / "out")
    assert sink.targets(sorted(tmp_path.glob("*/photo.jpg"))) == [tmp_path / "out/x/photo.jpg", tmp_path / "out/y/photo.jpg"]


def test_a_file_gets_the_same_confidence_by_every_route(classifier, large_jpeg):
    full = Image.open(large_jpeg).size
    assert open_image(large_jpeg, min_size=classifier.preprocess.decode_size).size < full  # decoded at reduced scale
    [(_, plain, none)] = classifier.classify_files([large_jpeg], topk=5)
    [(_, kept, frame)] = classifier.classify_files([large_jpeg], topk=5, keep_images=True)
    assert none is None and frame.shape[1::-1] == full  # the overlay gets the full photo
    routes = [kept, classifier.classify_batch([large_jpeg], topk=5)[0], classifier.classify(str(large_jpeg), topk=5)]
    for preds in routes:
        assert [p.index for p in preds] == [p.index for p in plain]
        assert np.allclose([p.confidence for p in preds], [p.confidence for p in plain], atol=1e-5, rtol=0)
    image = imgclass.load_image(EXAMPLES / "orange.jpg")  # pixels and files mix in one batch
    mixed = classifier.classify_batch([large_jpeg, image], topk=5)
    assert np.allclose([p.confidence for p in mixed[0]], [p.confidence for p in plain], atol=1e-5, rtol=0)
    assert mixed[1] == classifier.classify(image, topk=5)
    with pytest.raises(ImgclassError, match="not found"):
        classifier.classify_batch([large_jpeg.with_name("missing.jpg")])


def test_the_cli_gives_the_same_confidence_with_and_without_output(large_jpeg, tmp_path):
    rows = []
    for output in [[], [str(tmp_path / "annotated.jpg")]]:
        out = run_cli("classify", str(large_jpeg), *output, "--json", "--topk", "5")
        assert out.returncode == 0, out.stderr
        rows.append(json.loads(out.stdout)["predictions"])
    assert [p["index"] for p in rows[0]] == [p["index"] for p in rows[1]]
    assert np.allclose([p["confidence"] for p in rows[0]], [p["confidence"] for p in rows[1]], atol=1e-5, rtol=0)


def test_an_engine_that_decodes_files_serves_every_file_route(classifier, large_jpeg, monkeypatch):
    """On CUDA the engine decodes JPEGs itself (nvJPEG): with or without frames kept, and through
    classify_batch, a file takes that one way; pixels still go to ``run``."""
    probs = np.full(classifier.num_classes, 0.1 / (classifier.num_classes - 1), np.float32)
    probs[7] = 0.9

    class FileDecodingEngine:
        decodes_files = True  # declared, as the Engine protocol asks (runtime/base.py)

        def __init__(self, engine):
            self.run = engine.run

        def classify_files(self, paths):
            for path in paths:
                yield path, probs if path.exists() else ImgclassError(f"{path}: file not found")

    monkeypatch.setattr(classifier, "engine", FileDecodingEngine(classifier.engine))
    [(_, plain, _)] = classifier.classify_files([large_jpeg])
    [(_, kept, frame)], [(_, missing, _)] = (classifier.classify_files([large_jpeg], keep_images=True),
                                             classifier.classify_files([large_jpeg.with_name("gone.jpg")], keep_images=True))
    assert plain == kept == classifier.classify_batch([large_jpeg])[0] == [(7, classifier.labels[7], pytest.approx(0.9))]
    assert frame.shape[1::-1] == Image.open(large_jpeg).size and isinstance(missing, ImgclassError)
    assert classifier.classify(imgclass.load_image(large_jpeg))[0].label == "banana"


@pytest.fixture
def clips(tmp_path) -> Path:
    """A folder of two tiny videos nobody annotated, as ``clips/*.mp4`` matches them."""
    from test_media_robust import make_video

    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ["a.mp4", "b.mp4"]:
        make_video(folder / name, frames=3)
    return folder


def test_an_unquoted_video_glob_never_overwrites_the_second_video(clips):
    before = {p.name: p.read_bytes() for p in clips.iterdir()}
    out = run_cli("classify", str(clips / "a.mp4"), str(clips / "b.mp4"))  # what the shell makes of clips/*.mp4
    one_line_error(out, f"{clips / 'b.mp4'}: OUTPUT already exists and is not an annotated copy imgclass wrote",
                   "unquoted glob", f"for f in {clips}/*.mp4;")
    assert {p.name: p.read_bytes() for p in clips.iterdir()} == before  # unchanged, and no temporary file left


@pytest.mark.parametrize("name", ["out.mp4", "out.mkv", "out.avi"])
def test_a_video_sink_replaces_only_a_video_imgclass_wrote(clips, tmp_path, name):
    from imgclass.media.sinks import is_annotated_video, open_sink

    assert not is_annotated_video(clips / "a.mp4") and not is_annotated_video(EXAMPLES / "orange.jpg")
    for _ in range(2):  # the mark survives the container: the second sink replaces the first one's file
        with open_sink(tmp_path / name, frame_rate=30) as sink:
            for _ in range(2):
                sink.write(np.zeros((48, 64, 3), np.uint8))
        assert is_annotated_video(tmp_path / name)
    with pytest.raises(ImgclassError, match="not an annotated copy imgclass wrote"):
        open_sink(clips / "b.mp4")


def test_classifying_a_video_twice_replaces_its_own_output(clips, tmp_path):
    from test_runtime import tiny_onnx

    model, labels = tiny_onnx(tmp_path / "tiny.onnx", [[5, -5], [0, 0], [-5, 5]]), tmp_path / "labels.txt"
    labels.write_text("red\nblue\n")
    for _ in range(2):
        out = run_cli("classify", str(clips / "a.mp4"), str(tmp_path / "out.mp4"), "--model", str(model),
                      "--labels", str(labels))
        assert out.returncode == 0, out.stderr
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 3
