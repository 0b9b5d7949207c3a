"""Model definition, default weights (seeded, conditioned, deterministic), codes, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trt_serving.model.hasher import (
    HasherNet,
    ModelCard,
    bit_agreement,
    default_card,
    load_checkpoint,
    pack_codes,
)
from trt_serving.model.resnet import ResNetTrunk
from trt_serving.model.synthetic import generate_images, generated_inputs
from trt_serving.model.weights import build_default, fit_pca_itq, seed_for


@pytest.mark.parametrize(("arch", "params"), [("resnet18", 11_176_512), ("resnet50", 23_508_032)])
def test_trunk_matches_torchvision_parameter_count_without_fc(arch: str, params: int) -> None:
    # torchvision: resnet18 11,689,512 and resnet50 25,557,032 parameters, minus the 1000-way fc.
    net = ResNetTrunk(arch)
    assert sum(p.numel() for p in net.parameters()) == params


def test_state_dict_uses_torchvision_names() -> None:
    keys = set(HasherNet("resnet50").state_dict())
    for name in ("conv1.weight", "bn1.running_mean", "layer1.0.conv3.weight", "layer1.0.downsample.0.weight",
                 "layer1.0.downsample.1.num_batches_tracked", "layer4.2.bn3.bias", "embed.weight", "hash.bias"):
        assert name in keys
    assert "embed.weight" not in HasherNet("resnet18").state_dict()  # ResNet18 pools to 512 already


def test_forward_shapes() -> None:
    net = HasherNet("resnet18").eval()
    with torch.inference_mode():
        f, logits = net(torch.zeros(2, 3, 64, 64))
    assert f.shape == (2, 512) and logits.shape == (2, 128)


def test_pack_codes_and_agreement() -> None:
    logits = np.full((2, 128), -1.0, dtype=np.float32)
    logits[0, 0] = 1.0  # MSB of the first byte
    logits[1, 127] = 2.0  # LSB of the last byte
    codes = pack_codes(logits)
    assert codes.shape == (2, 16) and codes.dtype == np.uint8
    assert codes[0, 0] == 0x80 and codes[1, 15] == 0x01 and codes.sum() == 0x81
    assert bit_agreement(codes, codes) == 1.0
    assert bit_agreement(codes, np.zeros_like(codes)) == pytest.approx(1 - 2 / 256)


def test_seeds_differ_per_version_and_are_stable() -> None:
    assert seed_for("face", "1") != seed_for("face", "2") != seed_for("fingerprint", "1")
    assert seed_for("face", "2") == seed_for("face", "2")


def test_generated_images_are_deterministic_and_varied() -> None:
    a, b = generate_images(8, 5, size=64), generate_images(8, 5, size=64)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, generate_images(8, 6, size=64))
    means = a.reshape(8, -1, 3).mean(axis=1)
    assert means.std(axis=0).min() > 5  # colour and brightness vary between images
    gray = generate_images(4, 1, size=64, grayscale=True)
    assert np.array_equal(gray[..., 0], gray[..., 1])


def test_pca_itq_gives_balanced_bits() -> None:
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((400, 512)) @ rng.standard_normal((512, 512)) + 3.0
    weight, bias = fit_pca_itq(feats, seed=1)
    bits = (feats @ weight.T + bias) > 0
    assert weight.shape == (128, 512) and bias.shape == (128,)
    assert 0.35 < bits.mean(axis=0).min() and bits.mean(axis=0).max() < 0.65


def test_default_weights_are_deterministic_and_differ_per_version() -> None:
    a, _ = build_default("fingerprint", "1", n_recal=8, n_fit=140)
    b, card = build_default("fingerprint", "1", n_recal=8, n_fit=140)
    c, _ = build_default("fingerprint", "2", n_recal=8, n_fit=140)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.weight"], sc["conv1.weight"])
    assert card.weights == f"seeded:{seed_for('fingerprint', '1')}"
    # Conditioning: last BN of each block scaled to 0.2 (BN recalibration leaves gamma alone).
    assert torch.allclose(sa["layer1.0.bn2.weight"], torch.full_like(sa["layer1.0.bn2.weight"], 0.2))
    assert not torch.allclose(sa["layer1.0.bn2.running_var"], torch.ones(64))  # recalibrated
    x = torch.from_numpy(generated_inputs(32, 77, card.preprocessing))
    with torch.inference_mode():
        f, logits = a(x)
    bits = (logits > 0).float()
    assert 0.3 < bits.mean().item() < 0.7  # balanced overall
    fn = torch.nn.functional.normalize(f, dim=1)
    off_diag = (fn @ fn.T)[~torch.eye(32, dtype=torch.bool)]
    assert off_diag.mean().item() < 0.95  # features do not collapse to one direction


def test_card_round_trip() -> None:
    card = default_card("fingerprint", "3")
    assert ModelCard.from_json(card.to_json()) == card
    assert card.arch == "resnet18" and card.preprocessing.color == "L"
    with pytest.raises(ValueError, match="unknown model"):
        default_card("iris", "1")


def test_torchvision_style_checkpoint_loads_and_fits_head(tmp_path) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    trunk = ResNetTrunk("resnet18")
    state = dict(trunk.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # torchvision classifier
    path = tmp_path / "tv.pt"
    torch.save(state, path)
    net = HasherNet("resnet18")
    assert load_checkpoint(net, path) is False  # no hash head in a torchvision checkpoint
    assert torch.equal(net.state_dict()["layer2.1.conv2.weight"], state["layer2.1.conv2.weight"])
    full, card = build_default("fingerprint", "1", n_recal=8, n_fit=140, checkpoint=path)
    assert card.weights.startswith("checkpoint:")
    assert torch.equal(full.state_dict()["conv1.weight"], state["conv1.weight"])

    del state["layer1.0.bn1.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match="missing"):
        load_checkpoint(HasherNet("resnet18"), path)
