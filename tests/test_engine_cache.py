"""The engine cache under stress: models with external data, damaged entries, a model replaced
while its engine is built, a cache folder that cannot be written, and the wrong kind of --model."""
import os

import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import imgclass
import imgclass.runtime.onnx as onnx_runtime
from imgclass.errors import ImgclassError
from imgclass.runtime.cache import is_sealed, writable_dir

from conftest import run_cli
from test_runtime import BLUE, RED, tiny_onnx

RED_FIRST, BLUE_FIRST = [[5, -5], [0, 0], [-5, 5]], [[-5, 5], [0, 0], [5, -5]]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache of this test's own (subprocesses inherit it)."""
    monkeypatch.setenv("IMGCLASS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("red\nblue\n")
    return path


@pytest.fixture
def red_png(tmp_path):
    return imgclass.save_image(tmp_path / "red.png", RED)


def engines(cache):
    return sorted((cache / "engines").glob("*.onnx"))


def with_external_data(path, weights):
    """``tiny_onnx`` saved the way torch saves big models: graph in ``path``, tensors in ``path.data``."""
    proto = onnx.load(tiny_onnx(path, weights))
    w = proto.graph.initializer[0]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w), w.name))  # raw bytes: externalizable
    onnx.save_model(proto, path, save_as_external_data=True, location=f"{path.name}.data", size_threshold=0)
    return path


def one_line_error(out) -> str:
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_a_model_with_external_data_is_cached_whole_and_keyed_by_its_data(tmp_path, cache, labels, red_png):
    (tmp_path / "run").mkdir()
    model = with_external_data(tmp_path / "run" / "model.onnx", RED_FIRST)
    data = tmp_path / "run" / "model.onnx.data"
    assert data.stat().st_size == 6 * 4 and b"location" in model.read_bytes()
    out = run_cli("classify", str(red_png), "--model", str(model), "--labels", str(labels))
    assert out.returncode == 0 and "(red)" in out.stdout, out.stderr
    (engine,) = engines(cache)
    # the cached engine needs no file but itself: it loads from another folder, the .data gone
    data.rename(tmp_path / "elsewhere.data")
    assert not onnx.load(engine, load_external_data=False).graph.initializer[0].external_data
    assert ort.InferenceSession(str(engine), providers=["CPUExecutionProvider"]).get_inputs()[0].name == "input_0"
    # new tensor bytes in the .data file, the .onnx file untouched: a new key and the new weights' answers
    graph = model.read_bytes()
    with_external_data(model, BLUE_FIRST)
    assert model.read_bytes() == graph
    net = imgclass.Classifier(model=model, labels=labels)
    assert net.classify(RED)[0].label == "blue"
    assert len(engines(cache)) == 2


def test_a_missing_external_data_file_is_one_line(tmp_path, labels, red_png):
    model = with_external_data(tmp_path / "model.onnx", RED_FIRST)
    (tmp_path / "model.onnx.data").unlink()
    line = one_line_error(run_cli("classify", str(red_png), "--model", str(model), "--labels", str(labels)))
    assert str(model) in line and "external data" in line and ".data file" in line


@pytest.mark.parametrize("damage", ["truncated", "zero bytes", "a flipped byte"])
def test_a_damaged_engine_is_rebuilt(tmp_path, cache, labels, capsys, damage):
    model = tiny_onnx(tmp_path / "model.onnx", RED_FIRST)
    imgclass.Classifier(model=model, labels=labels)
    (engine,) = engines(cache)
    good = engine.read_bytes()
    bad = {"truncated": good[:len(good) // 2], "zero bytes": b"",
           "a flipped byte": good[:100] + bytes([good[100] ^ 1]) + good[101:]}[damage]
    engine.write_bytes(bad)
    capsys.readouterr()
    net = imgclass.Classifier(model=model, labels=labels)
    assert net.classify(RED)[0].label == "red" and net.classify(BLUE)[0].label == "blue"
    assert engines(cache) == [engine] and engine.read_bytes() == good and is_sealed(good)
    assert f"{engine}: damaged cache entry ({len(bad)} bytes); rebuilding it" in capsys.readouterr().err


def test_the_engine_is_built_from_the_bytes_its_key_hashes(tmp_path, cache, labels, monkeypatch):
    """A model file replaced while its engine is being built must not put the new model's engine
    under the old bytes' key."""
    model = tiny_onnx(tmp_path / "model.onnx", RED_FIRST)
    real_session = onnx_runtime.session

    def replaced_meanwhile(*args, optimized_to=None, **kwargs):
        if optimized_to:  # onnxruntime starts building: the user's export overwrites the file now
            tiny_onnx(model, BLUE_FIRST)
        return real_session(*args, optimized_to=optimized_to, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(onnx_runtime, "session", replaced_meanwhile)
        first = imgclass.Classifier(model=model, labels=labels)
    assert first.classify(RED)[0].label == "red"  # the bytes it read and hashed
    tiny_onnx(model, RED_FIRST)  # the old bytes again: their cached engine must be theirs
    assert imgclass.Classifier(model=model, labels=labels).classify(RED)[0].label == "red"
    assert len(engines(cache)) == 1


def test_a_read_only_cache_folder_still_classifies(tmp_path, cache, labels, capsys, monkeypatch):
    model = tiny_onnx(tmp_path / "model.onnx", RED_FIRST)
    imgclass.Classifier(model=model, labels=labels)  # one engine cached while the folder was writable
    for folder in (cache, cache / "engines"):
        folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes through permissions: refuse the write as the kernel would for a user
        real_open = os.open

        def refuse(file, flags, *args, **kwargs):  # creating a file in the cache: what a user may not
            if flags & os.O_CREAT and str(file).startswith(str(cache)):
                raise PermissionError(13, "Permission denied")
            return real_open(file, flags, *args, **kwargs)
        monkeypatch.setattr(os, "open", refuse)
    try:
        capsys.readouterr()
        assert imgclass.Classifier(model=model, labels=labels).classify(RED)[0].label == "red"
        assert "cannot write" not in capsys.readouterr().err  # the cached engine is only read
        other = tiny_onnx(tmp_path / "other.onnx", BLUE_FIRST)
        assert imgclass.Classifier(model=other, labels=labels).classify(RED)[0].label == "blue"
        warning = [l for l in capsys.readouterr().err.splitlines() if "cannot write" in l]
        assert warning == [f"imgclass: cannot write the cache in {cache / 'engines'} (Permission denied); running "
                           "without it (slower start every run): set IMGCLASS_CACHE to a writable folder"]
        assert len(engines(cache)) == 1
    finally:
        for folder in (cache, cache / "engines"):
            folder.chmod(0o755)


def test_a_cache_path_under_a_file_still_classifies(tmp_path, labels, red_png, monkeypatch):
    monkeypatch.setenv("IMGCLASS_CACHE", str(red_png / "cache"))
    model = tiny_onnx(tmp_path / "model.onnx", RED_FIRST)
    out = run_cli("classify", str(red_png), "--model", str(model), "--labels", str(labels))
    assert out.returncode == 0 and "(red)" in out.stdout, out.stderr
    assert "(Not a directory); running without it" in out.stderr and "Traceback" not in out.stderr


def test_a_tool_writing_its_own_cache_gets_a_folder_only_if_writable(tmp_path, capsys):
    """torch inductor's cache goes under imgclass's only where it can write (it crashes otherwise)."""
    assert writable_dir(tmp_path / "inductor" / "key") and (tmp_path / "inductor" / "key").is_dir()
    blocked = tmp_path / "inductor" / "key" / "file"
    blocked.write_bytes(b"")
    assert not writable_dir(blocked / "inductor")
    assert capsys.readouterr().err == (f"imgclass: cannot write the cache in {blocked / 'inductor'} (Not a directory); "
                                       "running without it (slower start every run): set IMGCLASS_CACHE to a "
                                       "writable folder\n")


def test_empty_or_corrupt_onnx_files_are_one_line(tmp_path, cache, labels, red_png):
    empty, cut, photo = tmp_path / "empty.onnx", tmp_path / "cut.onnx", tmp_path / "photo.onnx"
    empty.write_bytes(b"")
    cut.write_bytes(tiny_onnx(tmp_path / "whole.onnx", RED_FIRST).read_bytes()[:100])
    photo.write_bytes(red_png.read_bytes())
    line = one_line_error(run_cli("classify", str(red_png), "--model", str(empty), "--labels", str(labels)))
    assert line.endswith(f"{empty}: empty file (0 bytes), not an ONNX model; copy or export it again")
    for bad in [cut, photo]:  # refused before "optimizing ... (first run only)" is said: the error is the only line
        line = one_line_error(run_cli("classify", str(red_png), "--model", str(bad), "--labels", str(labels)))
        assert line == f"imgclass: error: {bad}: not a valid ONNX model (it does not parse as ONNX: cut short, or " \
                       "another kind of file); export it again"
    with pytest.raises(ImgclassError, match=f"{cut}: not a valid ONNX model .*; export it again"):
        imgclass.Classifier(model=cut, labels=labels)
    assert not engines(cache)


def test_a_run_folder_or_checkpoint_given_to_model(tmp_path, labels, red_png):
    run = tmp_path / "my run"
    run.mkdir()
    (run / "model_best.pth.tar").write_bytes(b"checkpoint")
    (run / "checkpoint.pth.tar").write_bytes(b"checkpoint")
    line = one_line_error(run_cli("classify", str(red_png), "--model", str(run)))
    assert f"{run}: a training run not exported to ONNX yet; run: imgclass export --model-dir '{run}'," in line
    line = one_line_error(run_cli("classify", str(red_png), "--model", str(run / "checkpoint.pth.tar")))
    assert f"a PyTorch file, not ONNX; for a training checkpoint run: imgclass export --model-dir '{run}' " \
           f"--input checkpoint.pth.tar, then pass --model '{run / 'model.onnx'}'" in line
    with pytest.raises(ImgclassError, match="model_best.pth.tar: a PyTorch file.*--model-dir '.*my run', then"):
        imgclass.Classifier(model=run / "model_best.pth.tar")
    tiny_onnx(run / "model.onnx", RED_FIRST)  # exported: the folder now means its model.onnx
    out = run_cli("classify", str(red_png), "--model", str(run), "--labels", str(labels))
    assert out.returncode == 0 and "(red)" in out.stdout, out.stderr
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImgclassError, match="a folder with no model.onnx"):
        imgclass.Classifier(model=tmp_path / "empty")
