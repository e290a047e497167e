"""The CUDA path (runs on a GPU machine; skipped, saying why, everywhere else)."""
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device here: the GPU path is tested on the GPU machine (see BENCHMARKS.md)", allow_module_level=True)

import imgclass  # noqa: E402
from imgclass.errors import ImgclassError  # noqa: E402


@pytest.fixture(scope="module")
def gpu():
    return imgclass.Classifier(device="cuda")


def test_auto_picks_the_gpu(gpu):
    assert imgclass.Classifier().engine.__class__.__name__ == "TorchEngine"
    assert "CUDA graphs" in gpu.engine.name


def test_gpu_agrees_with_the_cpu_runtime(gpu, images_dir):
    cpu = imgclass.Classifier(device="cpu")
    images = [imgclass.load_image(p) for p in sorted(images_dir.glob("*.jpg"))]
    x = cpu.preprocess.batch(images)
    p_cpu, p_gpu = cpu.probabilities(x), gpu.probabilities(x)
    assert p_gpu.shape == p_cpu.shape
    assert np.abs(p_gpu - p_cpu).max() < 0.05  # fp16 weights and activations
    assert (p_gpu.argmax(1) == p_cpu.argmax(1)).mean() >= 0.95


def test_batches_of_any_size_match(gpu):
    x = np.random.default_rng(0).standard_normal((300, 3, 224, 224), dtype=np.float32)
    whole = gpu.probabilities(x)
    parts = np.concatenate([gpu.probabilities(x[:1]), gpu.probabilities(x[1:4]), gpu.probabilities(x[4:])])
    assert np.allclose(whole, parts, atol=2e-3)
    assert np.allclose(whole.sum(1), 1, atol=1e-3)


def test_gpu_decode_classifies_a_folder_and_skips_bad_files(gpu, images_dir, tmp_path):
    names = ["orange_0.jpg", "banana_0.jpg"]
    for n in names:
        shutil.copy(images_dir / n, tmp_path / n)
    imgclass.save_image(tmp_path / "orange.png", imgclass.load_image(images_dir / "orange_0.jpg"))
    data = (images_dir / "orange_0.jpg").read_bytes()
    (tmp_path / "broken.jpg").write_bytes(data[:200])
    paths = sorted(tmp_path.iterdir())
    results = {p.name: r for p, r, _ in gpu.classify_files(paths, topk=1)}
    assert isinstance(results["broken.jpg"], ImgclassError)
    assert results["orange_0.jpg"][0].label == "orange" and results["orange.png"][0].label == "orange"
    assert results["banana_0.jpg"][0].label == "banana"
    cpu = {p.name: r for p, r, _ in imgclass.Classifier(device="cpu").classify_files(paths)}
    for name in names:
        assert abs(cpu[name][0].confidence - results[name][0].confidence) < 0.1


def test_a_folder_job_pays_only_for_what_it_uses(images_dir, monkeypatch):
    """One padded batch shape per job, a graph captured from its second batch, no torch.compile; a small
    job decoded by the CPU and run without cuDNN, a large one decoded by nvJPEG: the same classes."""
    from imgclass.models import get_spec
    from imgclass.models.registry import read_weights
    from imgclass.runtime import torch_cuda

    spec = get_spec("efficientnet-lite0")
    engine = torch_cuda.TorchEngine(torch_cuda.scripted_network(spec, read_weights(spec)), spec.preprocess)
    photos = sorted(images_dir.glob("*.jpg"))  # 32 JPEGs (and a PNG)
    paths = (photos * 3)[:66]  # batches of 64 and 2
    small = [p for _, p in engine.classify_files(paths, batch_size=64)]
    assert set(engine._graphs) == {(64, False, False)}  # the 2 ran padded to 64, on the graph of the 64
    monkeypatch.setattr(torch_cuda, "SMALL_JOB", 0)
    large = [p for _, p in engine.classify_files(paths, batch_size=64)]
    assert set(engine._graphs) == {(64, False, False), (64, False, True)}
    assert engine._compiled is None  # a folder job does not repay torch.compile
    assert (np.stack(small).argmax(1) == np.stack(large).argmax(1)).mean() >= 0.9


def test_images_of_one_size_resample_as_mixed_ones_do():
    """A batch of same-size images is stacked in one copy; the pixels equal the per-image canvases'."""
    from imgclass.media.gpu_decode import resize_and_crop
    from imgclass.models import get_spec

    p = get_spec("efficientnet-lite0").preprocess
    same = [torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8, device="cuda") for _ in range(4)]
    mixed = same + [torch.randint(0, 256, (3, 500, 200), dtype=torch.uint8, device="cuda")]
    assert torch.equal(resize_and_crop(same, p), resize_and_crop(mixed, p)[:4])


def test_nvjpeg_starts_beside_other_work(images_dir):
    """nvJPEG set up in a thread ahead of the job; the job's own decoder then decodes at full size."""
    from imgclass.media import gpu_decode

    gpu_decode.start_nvjpeg().join()  # a decoder already started in this process is harmless too
    [(paths, images)] = list(gpu_decode.GpuDecoder("cuda").batches(sorted(images_dir.glob("*.jpg"))[:2], 2))
    assert [im.shape[1:] for im in images] == [imgclass.load_image(p).shape[:2] for p in paths]


def test_a_large_job_plans_cudnn_while_its_files_are_read(images_dir, monkeypatch):
    """A large folder job's engine counts its outputs on the CPU and makes cuDNN's plan for the job's batch
    shape in a thread; the first batch waits for the plan; the answers are the CPU runtime's."""
    from imgclass.models import get_spec
    from imgclass.models.registry import read_weights
    from imgclass.runtime import torch_cuda

    monkeypatch.setattr(torch_cuda, "SMALL_JOB", 0)
    spec = get_spec("efficientnet-lite0")
    engine = torch_cuda.TorchEngine(torch_cuda.scripted_network(spec, read_weights(spec)), spec.preprocess, folder_job=66)
    assert engine.num_outputs == 1000 and engine._planned is not None
    paths = (sorted(images_dir.glob("*.jpg")) * 3)[:66]
    gpu = [p.argmax() for _, p in engine.classify_files(paths, batch_size=64)]
    assert engine._planned is None and set(engine._graphs) == {(64, False, True)}
    cpu = [r[0].index for _, r, _ in imgclass.Classifier(device="cpu").classify_files(paths)]
    assert np.mean(np.array(gpu) == np.array(cpu)) >= 0.9
