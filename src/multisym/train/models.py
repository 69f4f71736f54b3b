"""Networks: backbones, the SimCLR projector, the E-SSL equivariance head.

Architecture as in the official code (docs/method.md#backbone-and-projector):
  backbone f   torchvision ResNet-50 with ``fc`` replaced by identity and
               ``zero_init_residual=True`` (2048-d features); here also a small
               CIFAR-style ResNet of torchvision BasicBlocks for small images;
  projector p  Linear (no bias) -> BN -> ReLU for every hidden width, then
               Linear (no bias) -> BN: 2048 -> 2048 -> 2048 -> 128 at paper scale;
  Eq head h    Linear -> LN -> ReLU for every hidden width, Linear -> LN for the
               bottleneck, then Linear -> |G| (four linear layers at paper scale).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock

from multisym.errors import UserError


class SmallResNet(nn.Module):
    """CIFAR-style ResNet for small images: a 3x3 stem without pooling, one
    stage of BasicBlocks per width (stride 2 from the second stage on), global
    average pooling. Output: (B, widths[-1]) features."""

    def __init__(self, in_channels: int, widths: list[int], blocks: list[int]):
        super().__init__()
        if len(widths) != len(blocks):
            raise ValueError(f"widths {widths} and blocks {blocks} need the same length")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages, channels = [], widths[0]
        for index, (width, count) in enumerate(zip(widths, blocks)):
            stride = 1 if index == 0 else 2
            layers = []
            for block in range(count):
                downsample = None
                if block == 0 and (stride != 1 or channels != width):
                    downsample = nn.Sequential(
                        nn.Conv2d(channels, width, 1, stride=stride, bias=False),
                        nn.BatchNorm2d(width),
                    )
                layers.append(BasicBlock(channels, width, stride if block == 0 else 1, downsample))
                channels = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # Same reason as torchvision's zero_init_residual: each block starts as identity.
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)


def build_backbone(spec: dict, in_channels: int) -> nn.Module:
    """The encoder f from the ``backbone`` config section; ``.out_dim`` is its width."""
    arch = spec["arch"]
    if arch == "small_resnet":
        return SmallResNet(in_channels, spec["widths"], spec["blocks"])
    if arch in ("resnet18", "resnet50"):
        net = (resnet18 if arch == "resnet18" else resnet50)(zero_init_residual=True)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        net.out_dim = net.fc.in_features
        net.fc = nn.Identity()
        return net
    raise ValueError(f"unknown backbone arch {arch!r}; known: small_resnet, resnet18, resnet50")


def projector(in_dim: int, widths: list[int]) -> nn.Sequential:
    """SimCLR projector p (docs/method.md#backbone-and-projector):
    [Linear(no bias), BN, ReLU] per hidden width, then Linear(no bias), BN."""
    layers: list[nn.Module] = []
    dims = [in_dim] + list(widths)
    for index, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b)]
        if index < len(widths) - 1:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def equivariance_head(in_dim: int, widths: list[int], group_order: int) -> nn.Sequential:
    """E-SSL head h (docs/method.md#eq-members): [Linear, LN, ReLU] per hidden
    width, [Linear, LN] for the last width, then Linear to the |G| logits."""
    layers: list[nn.Module] = []
    dims = [in_dim] + list(widths)
    for index, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers += [nn.Linear(a, b), nn.LayerNorm(b)]
        if index < len(widths) - 1:
            layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Linear(dims[-1], group_order))
    return nn.Sequential(*layers)


class ContrastiveModel(nn.Module):
    """Backbone + projector (+ Eq head for eq members)."""

    def __init__(self, backbone: nn.Module, projector_widths: list[int], eq_head: nn.Module | None):
        super().__init__()
        self.backbone = backbone
        self.projector = projector(backbone.out_dim, projector_widths)
        self.eq_head = eq_head

    def forward(self, view1: Tensor, view2: Tensor, orbit: Tensor | None = None):
        """Projections of both views, and the Eq head's logits on the orbit
        (None without one). One call, so DDP sees every use of the weights."""
        z1, z2 = (self.projector(self.backbone(v)) for v in (view1, view2))
        return z1, z2, (self.eq_head(self.backbone(orbit)) if orbit is not None else None)


class SupervisedModel(nn.Module):
    """Backbone + linear classifier, trained with cross-entropy from scratch."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(backbone.out_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.backbone(x))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------- importing checkpoints
PREFIXES = ("module.backbone.", "backbone.", "module.")


class CheckpointImportError(UserError, RuntimeError):
    """A checkpoint that cannot be imported as a member."""


def _strip_prefix(state: dict) -> dict:
    """Remove one DDP / wrapper prefix shared by every key (module., backbone.)."""
    for prefix in PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            return {key[len(prefix):]: value for key, value in state.items()}
    return state


def import_checkpoint(path, backbone_spec: dict, in_channels: int, mode: str) -> dict:
    """Read an existing checkpoint as a member's parts.

    Accepted: the official release format, a dict whose ``backbone`` entry is a
    torchvision ResNet state dict (keys possibly prefixed with ``module.``), and
    a plain torchvision state dict. Loaded with ``weights_only=True`` and loaded
    strictly into the configured backbone, so a wrong prefix or architecture
    fails instead of leaving random weights
    (docs/method.md#where-the-official-code-differs item 12). A supervised
    member keeps torchvision's ``fc`` as its classifier; SSL members drop it.
    """
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointImportError(
            f"{path}: not a readable weights-only checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(raw, dict):
        raise CheckpointImportError(f"{path}: holds a {type(raw).__name__}, not a state dict")
    state = raw["backbone"] if isinstance(raw.get("backbone"), dict) else raw
    if not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointImportError(
            f"{path}: neither a state dict nor a dict with a 'backbone' state dict (keys: {sorted(raw)[:8]})"
        )
    state = _strip_prefix(dict(state))
    head = {key[3:]: state.pop(key) for key in list(state) if key.startswith("fc.")}
    backbone = build_backbone(backbone_spec, in_channels)
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise CheckpointImportError(f"{path}: tensor shapes do not match the configured backbone: {error}") from error
    if missing or unexpected:
        raise CheckpointImportError(
            f"{path}: does not match the configured backbone {backbone_spec['arch']!r}: "
            f"missing keys {missing[:6]}{'...' if len(missing) > 6 else ''}, "
            f"unexpected keys {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}"
        )
    parts = {"backbone": backbone.state_dict()}
    if mode == "sup":
        if set(head) != {"weight", "bias"}:
            raise CheckpointImportError(f"{path}: a supervised member needs its classifier (fc.weight, fc.bias)")
        parts["classifier"] = head
    return parts
