"""The network's input side for a training run: the network's own, or larger for images smaller than it."""
from dataclasses import replace
from pathlib import Path

from conftest import data_dir
from PIL import Image

from imgclass.models import get_spec
from imgclass.preprocess import Preprocess
from imgclass.train import TrainConfig
from imgclass.train.input_size import choose_input, median_short_side

LITE0 = get_spec("efficientnet-lite0")


def make_folder(root: Path, size: tuple[int, int], count: int = 3) -> Path:
    for split in ("train", "val"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.new("RGB", size, (40 * i, 90, 200)).save(root / split / name / f"{i}.png")
    return root


def test_images_smaller_than_the_network_train_at_a_larger_input(tmp_path):
    dataset = make_folder(tmp_path, (96, 128))
    pre, why = choose_input(LITE0, TrainConfig(str(dataset)), None)
    assert pre == replace(LITE0.preprocess, size=256)  # only the side changes: the crop, filter and mean/std stay
    assert "median short side 96 px" in why and "256 px" in why


def test_images_as_large_as_the_network_keep_its_own_input(tmp_path):
    pre, why = choose_input(LITE0, TrainConfig(str(make_folder(tmp_path, (224, 300)))), None)
    assert pre == LITE0.preprocess and "224 px, efficientnet-lite0's own" in why


def test_resolution_given_and_a_resumed_run_win_over_the_image_sizes(tmp_path):
    dataset = str(make_folder(tmp_path, (64, 64)))
    assert choose_input(LITE0, TrainConfig(dataset, resolution=64), None)[0].size == 64
    checkpoint = {"preprocess": Preprocess(size=192).to_json()}
    assert choose_input(LITE0, TrainConfig(dataset), checkpoint)[0] == Preprocess(size=192)


def test_only_headers_are_read(tmp_path):
    dataset = make_folder(tmp_path, (100, 80), count=1)
    for path in dataset.rglob("*.png"):
        path.write_bytes(path.read_bytes()[:64])  # the header survives, the pixels are gone
    (dataset / "train" / "a" / "junk.png").write_bytes(b"not an image")  # skipped: the decode step reports it
    assert median_short_side(str(dataset)) == 80


def test_a_missing_dataset_is_left_to_the_data_step(tmp_path):
    assert median_short_side(str(tmp_path / "nowhere")) is None
    assert choose_input(LITE0, TrainConfig(str(tmp_path / "nowhere")), None)[0] == LITE0.preprocess


def test_the_shared_photos_keep_the_network_input():
    for name in ("hymenoptera", "flowers12"):  # photos of 130-500 px short side; flowers12's are 224x224
        assert choose_input(LITE0, TrainConfig(str(data_dir(name))), None)[0] == LITE0.preprocess
