"""The hasher network, its model card and the checkpoint format.

Hasher = ResNet trunk -> 512-d feature -> 128-unit linear projection; the code is the sign of the
projection (bit = 1 where the projection is > 0), packed into 16 bytes. Engines output the
feature and the projection ("logits"); packing happens in numpy so every backend shares it.

Checkpoint format (``servestack build --weights PATH``): a ``torch.save``'d flat state dict whose
trunk keys are torchvision's ResNet names (``conv1.weight``, ``layer1.0.bn1.running_mean`` ...),
plus ``embed.weight``/``embed.bias`` (ResNet50 only: a 2048 -> 512 linear) and
``hash.weight`` [128, 512] / ``hash.bias`` [128]. A torchvision classifier's ``fc.*`` keys are
dropped. Without ``hash.*`` (a plain torchvision backbone) the projection is fitted PCA + ITQ on
the generated image set, like the default weights. A model card (JSON) travels beside it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trt_serving.model.resnet import ResNetTrunk

FEATURE_DIM = 512
CODE_BITS = 128
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How an encoded image becomes the engine's float32 [3, size, size] input."""

    input_size: int = 224
    color: str = "RGB"  # "L" = grayscale replicated to 3 channels (fingerprints)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "bilinear"


@dataclass(frozen=True)
class ModelCard:
    """Who a set of weights is: stored as ``model_card.json`` beside weights and engines."""

    name: str
    version: str
    modality: str
    arch: str
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    feature_dim: int = FEATURE_DIM
    code_bits: int = CODE_BITS
    weights: str = "seeded"  # "seeded:<seed>" or "checkpoint:<sha256>"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        raw = json.loads(text)
        pre = raw.pop("preprocessing", {})
        for key in ("mean", "std"):
            if key in pre:
                pre[key] = tuple(pre[key])
        return cls(preprocessing=Preprocessing(**pre), **raw)


# docs/ARCHITECTURE.md: face = ResNet50 on RGB, fingerprint = ResNet18 on grayscale replicated to 3 channels.
MODALITY_ARCH = {"face": "resnet50", "fingerprint": "resnet18"}


def default_card(modality: str, version: str) -> ModelCard:
    if modality not in MODALITY_ARCH:
        raise ValueError(f"unknown model {modality!r}; known: {sorted(MODALITY_ARCH)}")
    color = "L" if modality == "fingerprint" else "RGB"
    return ModelCard(name=f"servestack-{modality}-hasher", version=version, modality=modality,
                     arch=MODALITY_ARCH[modality], preprocessing=Preprocessing(color=color))


class HasherNet(ResNetTrunk):
    """ResNet trunk (torchvision names at top level) + ``embed`` to 512-d + ``hash`` projection.

    ``forward(x) -> (features [N, 512], logits [N, 128])``.
    """

    def __init__(self, arch: str):
        super().__init__(arch)
        self.embed: nn.Module = (
            nn.Identity() if self.out_features == FEATURE_DIM else nn.Linear(self.out_features, FEATURE_DIM)
        )
        self.hash = nn.Linear(FEATURE_DIM, CODE_BITS)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(super().forward(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        f = self.features(x)
        return f, self.hash(f)


def pack_codes(logits: np.ndarray) -> np.ndarray:
    """Sign bits of [N, 128] logits -> [N, 16] uint8 (bit 1 where logit > 0, MSB first)."""
    return np.packbits(np.asarray(logits) > 0, axis=1)


def bit_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of equal bits between two [N, 16] uint8 code arrays."""
    if a.shape != b.shape:
        raise ValueError(f"code shapes differ: {a.shape} vs {b.shape}")
    differ = np.unpackbits(np.bitwise_xor(a, b), axis=1).sum()
    return 1.0 - float(differ) / (a.shape[0] * a.shape[1] * 8)


def load_checkpoint(net: HasherNet, path: Path) -> bool:
    """Load a checkpoint into ``net``; return True when it carried the hash projection.

    Raises:
        ValueError: keys missing or unexpected (other than a torchvision ``fc.*`` classifier).
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    has_head = "hash.weight" in state
    own = net.state_dict()
    head_keys = {k for k in own if k.startswith(("hash.", "embed."))}
    missing = sorted(set(own) - set(state) - (set() if has_head else head_keys))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not fit {type(net).__name__}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    net.load_state_dict(state, strict=False)
    return has_head
