"""Results tables (``imgclass classify INPUT results.parquet|.csv|.jsonl``): the rows, the three formats,
list and table inputs, a stopped run resumed, and the same table from Ray Data on this machine and on a
2-node Ray cluster (head + worker on localhost)."""
import csv
import json
import logging
import shutil

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

import pyarrow.fs as pafs  # noqa: E402

import imgclass.media.inputs as inputs  # noqa: E402
import imgclass.batch.job as job  # noqa: E402
from imgclass.batch import classify_table  # noqa: E402
from imgclass.errors import ImgclassError  # noqa: E402

from conftest import EXAMPLES, run_cli  # noqa: E402

PHOTOS = ["orange", "banana", "robin", "jellyfish", "black_bear", "golden_retriever"]
CLASSIFY_ROWS = job.classify_rows
SETTINGS = {"topk": 3, "shard_size": 3}  # 8 images: parts [0, 3), [3, 6), [6, 8), the bad two in the last


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six photos, then a truncated JPEG and a text file named .png, numbered in that order."""
    root = tmp_path_factory.mktemp("photos")
    for i, name in enumerate(PHOTOS, 1):
        shutil.copy(EXAMPLES / f"{name}.jpg", root / f"{i}_{name}.jpg")
    (root / "7_truncated.jpg").write_bytes((EXAMPLES / "orange.jpg").read_bytes()[:2000])
    (root / "8_notes.png").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def local(folder, tmp_path_factory) -> pa.Table:
    """The table of a run in this process: the reference for every other route."""
    out = tmp_path_factory.mktemp("local") / "results.parquet"
    summary = classify_table(str(folder), out, **SETTINGS)
    assert (summary.images, summary.resumed, len(summary.errors)) == (8, 0, 2)
    return pq.read_table(out)


def float32(values):
    return None if values is None else [np.float32(v) for v in values]


def test_rows_are_the_classifiers_results_and_the_errors(folder, local, classifier):
    paths = sorted(folder.iterdir(), key=lambda p: p.name)
    rows = local.to_pylist()
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    for row, (_, preds, _) in zip(rows[:6], classifier.classify_files(paths[:6], topk=3)):
        assert row["indices"] == [p.index for p in preds] and row["labels"] == [p.label for p in preds]
        assert float32(row["confidences"]) == float32([p.confidence for p in preds])
        assert row["error"] is None
    assert rows[0]["indices"][0] == 950 and rows[0]["labels"][0] == "orange"
    for row, why in zip(rows[6:], ["corrupt or truncated", "not an image"]):
        assert row["error"].startswith(row["path"] + ": ") and why in row["error"]
        assert row["indices"] is row["labels"] is row["confidences"] is None
    assert json.loads(local.schema.metadata[b"imgclass"]) == {"network": "efficientnet-lite0", "topk": 3,
                                                                "threshold": 0.0}


def test_csv_and_jsonl_hold_the_same_rows(folder, local, tmp_path):
    for suffix in (".csv", ".jsonl"):
        classify_table(str(folder), tmp_path / f"results{suffix}", **SETTINGS)
    with open(tmp_path / "results.csv", newline="") as f:
        from_csv = list(csv.DictReader(f))
    from_jsonl = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    for want, c, j in zip(local.to_pylist(), from_csv, from_jsonl, strict=True):
        assert c["path"] == j["path"] == want["path"]
        assert (c["error"] or None) == j["error"] == want["error"]
        if want["error"] is None:
            assert [int(i) for i in c["indices"].split(";")] == j["indices"] == want["indices"]
            assert c["labels"].split(";") == j["labels"] == want["labels"]
            assert float32(c["confidences"].split(";")) == float32(j["confidences"]) == float32(want["confidences"])
        else:
            assert c["indices"] == c["labels"] == c["confidences"] == "" and j["indices"] is None


def test_list_file_and_table_column_inputs(folder, local, tmp_path):
    names = [p.name for p in sorted(folder.iterdir()) if p.suffix != ".txt"]
    lst = folder / "list.txt"  # relative entries: relative to the list's folder, kept as written
    lst.write_text("# the photos\n\n" + "\n".join(names) + "\n")
    by_path = {r["path"]: r for r in local.to_pylist()}
    want = [{**by_path[str(folder / n)], "path": n} for n in names]
    for row in want[6:]:  # messages too name the image as the list does
        row["error"] = row["error"].replace(str(folder / row["path"]), row["path"])
    summary = classify_table(str(lst), tmp_path / "from_list.parquet", **SETTINGS)
    assert pq.read_table(tmp_path / "from_list.parquet").to_pylist() == want
    assert summary.errors == [r["error"] for r in want if r["error"]] and "8_notes.png: not an image" in summary.errors[1]

    paths = [str(folder / n) for n in names]
    pq.write_table(pa.table({"id": range(8), "file": paths}), tmp_path / "table.parquet")
    (tmp_path / "table.csv").write_text("id,file\n" + "".join(f"{i},{p}\n" for i, p in enumerate(paths)))
    for table in ("table.parquet", "table.csv"):
        out = tmp_path / f"from_{table}.jsonl"
        classify_table(str(tmp_path / table), out, path_column="file", **SETTINGS)
        assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == paths
    with pytest.raises(ImgclassError, match=r"no column 'path' \(it has: id, file\); name the column .* --path-column"):
        classify_table(str(tmp_path / "table.parquet"), tmp_path / "x.parquet")


def test_uris_are_read_through_their_filesystem(folder, local, tmp_path, monkeypatch):
    """s3:// (here: the photos folder standing in for a bucket) is copied to a local file to decode;
    file:// is read in place; a missing object is an error row."""
    bucket = pafs.SubTreeFileSystem(str(folder), pafs.LocalFileSystem())
    real = inputs.filesystem
    monkeypatch.setattr(inputs, "filesystem", lambda uri: (bucket, uri.removeprefix("s3://photos/"))
                        if uri.startswith("s3://") else real(uri))
    uris = ["s3://photos/1_orange.jpg", (folder / "2_banana.jpg").as_uri(), "s3://photos/7_truncated.jpg",
            "s3://photos/gone.jpg"]
    (tmp_path / "uris.txt").write_text("\n".join(uris))
    classify_table(str(tmp_path / "uris.txt"), tmp_path / "results.parquet", **SETTINGS)
    rows = pq.read_table(tmp_path / "results.parquet").to_pylist()
    assert [r["path"] for r in rows] == uris
    want = local.to_pylist()
    for row, reference in zip(rows[:2], want[:2]):
        assert {**row, "path": reference["path"]} == reference
    assert rows[2]["error"] == want[6]["error"].replace(want[6]["path"], uris[2])
    assert rows[3]["error"] == "s3://photos/gone.jpg: file not found; check the path"


def test_an_existing_file_that_is_not_a_results_table_is_left_alone(folder, tmp_path):
    mine = tmp_path / "notes.csv"
    mine.write_text("name,phone\nann,123\n")
    with pytest.raises(ImgclassError, match="not a results table imgclass wrote"):
        classify_table(str(folder), mine)
    assert mine.read_text() == "name,phone\nann,123\n"
    listing = tmp_path / "paths.csv"
    listing.write_text(f"path\n{folder / '1_orange.jpg'}\n")
    with pytest.raises(ImgclassError, match="OUTPUT is an input file"):
        classify_table(str(listing), listing)
    with pytest.raises(ImgclassError, match="results table ends in .parquet, .csv, .jsonl"):
        classify_table(str(folder), tmp_path / "results.xlsx")


def counting_rows(calls: list, stop_after: int | None = None):
    """``classify_rows`` that records each part's size, and raises Ctrl-C once ``stop_after`` parts are done."""
    def classify_rows(net, refs, *args):
        if len(calls) == stop_after:
            raise KeyboardInterrupt
        calls.append(len(refs))
        return CLASSIFY_ROWS(net, refs, *args)
    return classify_rows


def test_a_stopped_run_continues_with_the_missing_parts(folder, local, tmp_path, monkeypatch):
    out, calls = tmp_path / "results.parquet", []
    monkeypatch.setattr(job, "classify_rows", counting_rows(calls, stop_after=2))
    with pytest.raises(KeyboardInterrupt):
        classify_table(str(folder), out, **SETTINGS)
    assert not out.exists() and calls == [3, 3]
    assert json.loads((tmp_path / "results.parquet.parts" / "manifest.json").read_text())["done"] == [[0, 3], [3, 6]]

    calls.clear()
    monkeypatch.setattr(job, "classify_rows", counting_rows(calls))
    summary = classify_table(str(folder), out, **SETTINGS)
    assert calls == [2], "only the part not done"
    assert summary.resumed == 6 and len(summary.errors) == 2
    assert pq.read_table(out).equals(local) and pq.read_table(out).schema.metadata == local.schema.metadata
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.parquet"], "the parts are gone"

    calls.clear()
    monkeypatch.setattr(job, "classify_rows", counting_rows(calls, stop_after=1))
    with pytest.raises(KeyboardInterrupt):
        classify_table(str(folder), out, **SETTINGS)
    monkeypatch.setattr(job, "classify_rows", counting_rows(calls))
    assert classify_table(str(folder), out, **{**SETTINGS, "topk": 2}).resumed == 0, "other settings: parts of no use"
    assert calls == [3, 3, 3, 2]


@pytest.fixture(scope="module")
def ray_here():
    """One local Ray for the module's Ray tests (its start takes seconds)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_local_table_and_continues_a_stopped_run(folder, local, ray_here, tmp_path, monkeypatch):
    out = tmp_path / "results.parquet"
    summary = classify_table(str(folder), out, ray="local", **SETTINGS)
    assert pq.read_table(out).equals(local) and pq.read_table(out).schema.metadata == local.schema.metadata
    assert summary.where == "on Ray: 2 actor(s) on 1 node(s)" and len(summary.errors) == 2

    calls = []
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(job, "classify_rows", counting_rows(calls, stop_after=1))
        classify_table(str(folder), out, **SETTINGS)
    summary = classify_table(str(folder), out, ray="local", **SETTINGS)
    assert summary.resumed == 3 and pq.read_table(out).equals(local)


@pytest.mark.slow
def test_a_two_node_ray_cluster_gives_the_same_table(folder, local, tmp_path):
    """Head and worker of 1 CPU each: an actor on each. The images three times over, in blocks of 8
    (--batch-size 1): an actor holds at most 2 blocks at a time, so the worker's actor gets work even
    though the blocks live on the head."""
    from ray.cluster_utils import Cluster

    (tmp_path / "three.txt").write_text("".join(f"{path}\n" for path in local["path"].to_pylist() * 3))
    small = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={**small, "include_dashboard": False})
    try:
        cluster.add_node(**small)
        out = run_cli("classify", str(tmp_path / "three.txt"), str(tmp_path / "results.parquet"), "--topk", "3",
                      "--batch-size", "1", "--shard-size", "3", "--ray", cluster.address)
    finally:
        cluster.shutdown()
    assert out.returncode == 1, out.stderr  # images skipped
    assert "on Ray: 2 actor(s) on 2 node(s)" in out.stderr and "Traceback" not in out.stderr, out.stderr
    table = pq.read_table(tmp_path / "results.parquet")
    assert table.equals(pa.concat_tables([local] * 3)) and table.schema.metadata == local.schema.metadata
