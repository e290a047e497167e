"""The seams: every route builds its engine through ``runtime.select.select_engine`` (seen by a spy
runtime registered first, which records and declines), decodes files through ``media.decode`` (seen by
counting its one call into Pillow), and reads ``--model`` through ``models.resolve``; a new runtime is
one registration."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import imgclass
import imgclass.media.decode as decode_module
import imgclass.models.resolve as resolve_module
from imgclass.runtime.base import Runtime, register_runtime, unregister_runtime
from conftest import EXAMPLES

PHOTOS = ["orange.jpg", "banana.jpg"]


@pytest.fixture()
def seen(monkeypatch):
    """What each route did: the (model, device) of every engine selection, the files decoded, the
    --model values resolved."""
    seen = {"engines": [], "decoded": [], "resolved": []}
    spy = register_runtime(Runtime("spy", lambda m, d, p: seen["engines"].append((m.name, d)) and False, None))
    real_open, real_file = decode_module.open_image, resolve_module.model_file
    monkeypatch.setattr(decode_module, "open_image", lambda image, **kw: seen["decoded"].append(
        Path(image).name if not isinstance(image, bytes) else "<bytes>") or real_open(image, **kw))
    monkeypatch.setattr(resolve_module, "model_file", lambda model, *a, **kw: seen["resolved"].append(str(model))
                        or real_file(model, *a, **kw))
    yield seen
    unregister_runtime(spy)


@pytest.fixture()
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(EXAMPLES / name, folder / name)
    return folder


def test_api_and_cli_folder_and_video_routes(seen, photos, tmp_path, capsys):
    from imgclass import cli

    net = imgclass.Classifier()
    assert seen["engines"] == [("efficientnet-lite0", "cpu")]
    assert net.classify(photos / "orange.jpg")[0].label == "orange" and seen["decoded"] == ["orange.jpg"]
    for argv, what in ((["classify", str(photos)], "folder"), (["classify", str(photos), str(tmp_path / "out.mp4")], "video")):
        seen["engines"].clear(), seen["decoded"].clear()
        assert cli.main(argv) == 0, what
        assert seen["engines"] == [("efficientnet-lite0", "cpu")], what
        assert sorted(seen["decoded"]) == sorted(PHOTOS), what  # the network's pixels come from media.decode
    assert "(orange)" in capsys.readouterr().out


def test_table_and_ray_actor_rows_route(seen, photos, tmp_path):
    pytest.importorskip("pyarrow")
    from imgclass.batch import classify_table
    from imgclass.media.inputs import resolve_input
    from imgclass.batch.rows import classify_rows

    classify_table(str(photos), tmp_path / "out.parquet", {}, shard_size=1)
    assert seen["engines"] == [("efficientnet-lite0", "cpu")] and sorted(seen["decoded"]) == sorted(PHOTOS)
    seen["engines"].clear(), seen["decoded"].clear()
    net = imgclass.Classifier(device="cpu")  # what each Ray actor builds from the same options
    table = classify_rows(net, resolve_input(str(photos)).refs)
    assert seen["engines"] == [("efficientnet-lite0", "cpu")] and sorted(seen["decoded"]) == sorted(PHOTOS)
    assert table.column("labels").to_pylist()[0][0] == "banana"


def test_serve_and_capture_preview_routes(seen, tiny_run, tmp_path):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from imgclass.capture.trainer import Preview
    from imgclass.serve import Settings, create_app

    jpeg = (EXAMPLES / "orange.jpg").read_bytes()
    with TestClient(create_app([imgclass.Classifier()], Settings())) as client:
        r = client.post("/v1/classify", content=jpeg, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "orange"
    assert seen["engines"] == [("efficientnet-lite0", "cpu")] and seen["decoded"] == ["<bytes>"]
    from imgclass.export.run import export_run
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    export_run(run)
    for kept in seen.values():
        kept.clear()
    scores = Preview(run / "model.onnx").scores(jpeg)
    assert sorted(s["label"] for s in scores) == ["blue", "red"] and seen["decoded"] == ["<bytes>"]
    assert seen["engines"] == [("model", "cpu")] and seen["resolved"] == [str(run / "model.onnx")]


def test_training_route(seen, tmp_path):
    from imgclass.train import TrainConfig, train
    from test_train import make_dataset

    dataset = make_dataset(tmp_path / "data", train_n=4, val_n=2)
    train(TrainConfig(str(dataset), model_dir=str(tmp_path / "run"), epochs=0, resolution=64, device="cpu"))
    assert [device for _, device in seen["engines"]] == ["cpu"]  # the frozen trunk's engine
    assert seen["engines"][0][0].startswith("efficientnet-lite0-trunk64")
    assert len(seen["decoded"]) == 12  # every image once, through media.decode


def test_model_is_resolved_by_one_function(seen, tiny_run, tmp_path):
    from imgclass.export.run import export_run
    from imgclass.train.evaluate import open_scorer

    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    export_run(run)
    seen["resolved"].clear()
    imgclass.Classifier(model=run)
    open_scorer(run)
    open_scorer(run / "model_best.pth.tar")
    assert seen["resolved"] == [str(run), str(run), str(run / "model_best.pth.tar")]


def test_a_new_runtime_is_one_registration(tmp_path):
    """A fake runtime, registered as a new module would: every route then runs on it."""
    class Uniform:
        name, precision, device, metadata, input_size, num_outputs, decodes_files = "uniform", "fp32", "cpu", {}, 224, 1000, False

        def run(self, batch: np.ndarray) -> np.ndarray:
            probs = np.full((len(batch), 1000), 0.5 / 999, np.float32)
            probs[:, 7] = 0.5
            return probs

    fake = register_runtime(Runtime("uniform", lambda model, device, precision: device == "cpu",
                                    lambda model, device, precision, options: Uniform()))
    try:
        net = imgclass.Classifier(device="cpu")
        assert net.engine.name == "uniform" and "uniform" in repr(net)
        [top] = net.classify(EXAMPLES / "orange.jpg")
        assert (top.index, top.confidence) == (7, 0.5)
    finally:
        unregister_runtime(fake)
    assert imgclass.Classifier(device="cpu").classify(EXAMPLES / "orange.jpg")[0].label == "orange"


def test_a_list_of_images_works_with_every_output_kind(photos, tmp_path, capsys):
    """INPUT means the same whatever OUTPUT is: a .txt list (relative to itself, # comments) included."""
    from imgclass import cli

    (photos / "sub").mkdir()
    shutil.copy(EXAMPLES / "robin.jpg", photos / "sub" / "robin.jpg")
    listing = tmp_path / "list.txt"
    listing.write_text("# two photos\nphotos/orange.jpg\n\nphotos/sub/robin.jpg\n")
    for output in (None, tmp_path / "annotated", tmp_path / "out.mp4", tmp_path / "out.csv", tmp_path / "out.jsonl"):
        assert cli.main(["classify", str(listing), *([str(output)] if output else [])]) == 0, output
        out = capsys.readouterr().out
        if output is None:
            assert "(orange)" in out and "(robin, American robin, Turdus migratorius)" in out
    assert sorted(p.name for p in (tmp_path / "annotated").rglob("*.jpg")) == ["orange.jpg", "robin.jpg"]
    assert "robin" in (tmp_path / "out.csv").read_text() and (tmp_path / "out.mp4").stat().st_size > 0
    # a folder is searched recursively, and an OUTPUT inside it is left out
    assert cli.main(["classify", str(photos), str(photos / "annotated")]) == 0
    assert sorted(p.relative_to(photos / "annotated").as_posix() for p in (photos / "annotated").rglob("*.jpg")) == \
        ["banana.jpg", "orange.jpg", "sub/robin.jpg"]
    assert cli.main(["classify", str(photos), str(tmp_path / "again")]) == 0  # the copies above are not INPUT
    assert len(list((tmp_path / "again").rglob("*.jpg"))) == 3
