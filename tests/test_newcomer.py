"""What tripped a newcomer: a dataset folder as INPUT, a run not exported, a flag typo, --ray taking
INPUT as its address, a video into one image file, encoded bytes in the Python API."""
from __future__ import annotations

import shutil
from pathlib import Path

import imgclass
from conftest import EXAMPLES, run_cli
from test_train import TINY, make_dataset


def test_a_dataset_folder_is_searched_and_train_leaves_a_model_ready_to_classify(tmp_path):
    dataset = make_dataset(tmp_path / "data", train_n=4, val_n=2)
    out = run_cli("train", str(dataset), "--model-dir", str(tmp_path / "run"), *TINY, "--epochs", "1")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "run" / "model.onnx").is_file() and "classify with: imgclass classify IMAGES --model" in out.stdout
    out = run_cli("classify", str(dataset / "val"), "--model", str(tmp_path / "run"))  # class subfolders
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("(red)") == 2 and out.stdout.count("(blue)") == 2


def test_a_flag_typo_gets_a_suggestion_and_the_verbs_help():
    out = run_cli("classify", str(EXAMPLES / "orange.jpg"), "--top-k", "3")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("imgclass classify: error: unrecognized arguments: --top-k 3 (did you mean --topk?); "
                                  "see imgclass classify --help")


def test_ray_taking_input_as_its_address_says_so(tmp_path):
    out = run_cli("classify", "--ray", str(EXAMPLES), str(tmp_path / "r.parquet"))
    assert out.returncode == 1
    assert f"--ray took '{EXAMPLES}' as its address: put --ray after INPUT OUTPUT, or --ray=ADDRESS" in out.stderr


def test_a_video_into_one_image_file_is_refused_before_any_frame(tmp_path):
    from test_media_robust import make_video

    clip = make_video(tmp_path / "clip.mkv")
    out = run_cli("classify", str(clip), str(tmp_path / "out.png"))
    assert out.returncode == 1 and "one image file for the frames of" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "out.png").exists() and out.stdout == ""


def test_the_api_takes_encoded_bytes_and_says_what_it_is(classifier, tmp_path):
    data = (EXAMPLES / "orange.jpg").read_bytes()
    assert classifier.classify(data) == classifier.classify(EXAMPLES / "orange.jpg")
    shutil.copy(EXAMPLES / "orange.jpg", tmp_path / "o.jpg")
    assert classifier.classify_batch([data, tmp_path / "o.jpg"])[0][0].label == "orange"
    assert repr(classifier) == "Classifier('efficientnet-lite0', 1000 classes, ONNX Runtime fp32 on CPU)"
    try:
        classifier.classify(b"not an image")
    except imgclass.ImgclassError as e:
        assert str(e) == "image 0: not an image, or a format Pillow cannot read"
    else:
        raise AssertionError("no error for bytes that are not an image")


def test_a_trained_run_is_served_under_its_folder_name(tiny_run, tmp_path):
    """`serve --model models/hymenoptera` answers at /v2/models/hymenoptera, not under the network's
    description with spaces in it."""
    import pytest
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from imgclass.export.run import export_run
    from imgclass.serve import Settings, create_app

    run = Path(shutil.copytree(tiny_run, tmp_path / "hymenoptera"))
    export_run(run)
    with TestClient(create_app([imgclass.Classifier(model=run)], Settings())) as client:
        meta = client.get("/v2/models/hymenoptera")
        assert meta.status_code == 200 and meta.json()["name"] == "hymenoptera"
        assert client.get("/v2/models/hymenoptera/ready").json()["ready"] is True
