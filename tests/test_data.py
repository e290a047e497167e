"""Dataset folders: layout, labels.txt, the content-hash split, the checking pass."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclass.data import check_dataset, decode_images, find_dataset, hash_split, write_split
from imgclass.errors import ImgclassError
from imgclass.preprocess import Preprocess

from conftest import run_cli

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def make_images(folder: Path, colour, count: int, seed: int) -> None:
    """``count`` 64x64 images of one colour with a little noise (each file's bytes differ)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = np.clip(np.asarray(colour) + rng.integers(-25, 25, (64, 64, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")


def make_class_folders(root: Path, per_class: int = 10) -> Path:
    for k, (name, colour) in enumerate(COLOURS.items()):
        make_images(root / name, colour, per_class, seed=k)
    return root


def test_train_val_layout_and_labels_order(tmp_path):
    for split, n in (("train", 4), ("validation", 2)):
        for k, (name, colour) in enumerate(COLOURS.items()):
            make_images(tmp_path / split / name, colour, n, seed=k)
    (tmp_path / "labels.txt").write_text("red\nblue\n")
    ds = find_dataset(tmp_path)
    assert ds.classes == ["red", "blue"] and ds.split == "folders"
    assert len(ds.train) == 8 and len(ds.val) == 4
    assert {label for p, label in ds.train if p.parent.name == "blue"} == {1}


def test_labels_txt_naming_a_missing_folder_is_one_clear_error(tmp_path):
    make_class_folders(tmp_path / "train", 2)
    (tmp_path / "labels.txt").write_text("red\nblue\ngreen\n")
    with pytest.raises(ImgclassError, match="green have no folder"):
        find_dataset(tmp_path)
    out = run_cli("train", str(tmp_path), "--model-dir", str(tmp_path / "run"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "labels.txt" in out.stderr


def test_hash_split_is_stratified_written_down_and_independent_of_names(tmp_path):
    root = make_class_folders(tmp_path / "ds")
    ds = find_dataset(root, val_split=0.2)
    assert ds.split == "hash" and len(ds.val) == 4 and len(ds.train) == 16
    assert sorted(l for _, l in ds.val) == [0, 0, 1, 1]
    again = find_dataset(root, val_split=0.2)
    assert again.val == ds.val and again.train == ds.train
    # Renaming every file keeps the same images in val: the split follows the bytes.
    renamed = tmp_path / "renamed"
    shutil.copytree(root, renamed)
    for p in sorted(renamed.glob("*/*.png")):
        p.rename(p.with_name("x" + p.name))
    moved = find_dataset(renamed, val_split=0.2)
    assert {(p.parent.name, p.name[1:]) for p, _ in moved.val} == {(p.parent.name, p.name) for p, _ in ds.val}
    # A written split is reused even when val_split changes.
    split = write_split(tmp_path / "split.json", ds, 0.2)
    assert find_dataset(root, val_split=0.5, split_file=split).val == ds.val


def test_checks_skip_bad_files_and_warn_about_duplicates_and_small_classes(tmp_path):
    for k, (name, colour) in enumerate(COLOURS.items()):
        make_images(tmp_path / "train" / name, colour, 8 if name == "red" else 1, seed=k)
        make_images(tmp_path / "val" / name, colour, 2, seed=10 + k)
    (tmp_path / "train" / "red" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "train" / "red" / "notes.txt").write_text("hello")
    shutil.copy(tmp_path / "train" / "red" / "img0.png", tmp_path / "val" / "red" / "copy.png")
    ds = find_dataset(tmp_path)
    assert [p.name for p, _ in ds.skipped] == ["notes.txt"]
    pre = Preprocess(size=32)
    train, bad = decode_images(ds.train, pre)
    val, _ = decode_images(ds.val, pre)
    assert [p.name for p, _ in bad] == ["broken.jpg"] and len(train) == 9
    warnings = check_dataset(ds.classes, train, val, ds.skipped + bad)
    text = "\n".join(warnings)
    assert "broken.jpg" in text and "notes.txt" in text
    assert "also in train" in text and "blue (1)" in text


def test_a_class_without_readable_training_images_is_an_error(tmp_path):
    make_images(tmp_path / "train" / "red", COLOURS["red"], 3, 0)
    (tmp_path / "train" / "blue").mkdir()
    (tmp_path / "train" / "blue" / "broken.png").write_bytes(b"junk")
    make_class_folders(tmp_path / "val", 1)
    ds = find_dataset(tmp_path)
    pre = Preprocess(size=32)
    train, bad = decode_images(ds.train, pre)
    with pytest.raises(ImgclassError, match="blue have no readable training image"):
        check_dataset(ds.classes, train, decode_images(ds.val, pre)[0], bad)


def test_bad_dataset_paths_are_one_line_errors(tmp_path):
    with pytest.raises(ImgclassError, match="dataset folder not found"):
        find_dataset(tmp_path / "nope")
    make_images(tmp_path / "only" / "red", COLOURS["red"], 2, 0)
    with pytest.raises(ImgclassError, match="at least 2"):
        find_dataset(tmp_path / "only")


def test_a_stale_split_keeps_its_assignments_and_places_new_images_by_content(tmp_path):
    root = make_class_folders(tmp_path / "ds")
    ds = find_dataset(root, val_split=0.2)
    split = write_split(tmp_path / "split.json", ds, 0.2)
    make_images(tmp_path / "new", COLOURS["red"], 5, seed=99)
    added = [p.rename(root / "red" / f"new{i}.png") for i, p in enumerate(sorted((tmp_path / "new").iterdir()))]
    removed = ds.train[0][0]
    removed.unlink()
    again = find_dataset(root, val_split=0.2, split_file=split)
    train, val = {p for p, _ in again.train}, {p for p, _ in again.val}
    assert {p for p, _ in ds.train} - {removed} <= train and {p for p, _ in ds.val} <= val, "old images keep their side"
    assert set(added) <= train | val and removed not in train | val
    # New images go where a fresh content split of the whole dataset puts them.
    assert {p for p in added if p in val} == {p for p, _ in hash_split(again.train + again.val, 0.2)[1] if p in added}
    assert not again.split_saved
    assert any("5 new image(s)" in w and "1 removed" in w for w in again.warnings), again.warnings
    # Written down again, the split is exact: nothing to say, nothing to write.
    current = find_dataset(root, val_split=0.2, split_file=write_split(split, again, 0.2))
    assert current.split_saved and not current.warnings and current.val == again.val


def test_refuses_a_one_class_labels_list_and_warns_about_a_class_only_in_val(tmp_path):
    for split in ("train", "val"):
        for k, (name, colour) in enumerate(COLOURS.items()):
            make_images(tmp_path / split / name, colour, 2, seed=k)
    make_images(tmp_path / "val" / "green", (30, 220, 30), 2, seed=2)
    (tmp_path / "labels.txt").write_text("red\n")
    with pytest.raises(ImgclassError, match="lists 1 class\\(es\\); a classifier needs at least 2"):
        find_dataset(tmp_path)
    (tmp_path / "labels.txt").write_text("red\nblue\n")
    ds = find_dataset(tmp_path)
    assert ds.classes == ["red", "blue"] and len(ds.warnings) == 1, ds.warnings
    assert "val/green has images but there is no" in ds.warnings[0] and "not trained" in ds.warnings[0]
