"""Tests for multisym.train.models: backbones, the projector and the equivariance head."""

import pytest
import torch
from torch import nn

from multisym.train.models import (
    ContrastiveModel,
    SmallResNet,
    SupervisedModel,
    build_backbone,
    count_parameters,
    equivariance_head,
    projector,
)

SMALL = {"arch": "small_resnet", "widths": [16, 32, 64], "blocks": [1, 1, 1]}


def layer_types(seq: nn.Sequential) -> list[type]:
    return [type(m) for m in seq]


def test_small_resnet_size_and_shape():
    torch.manual_seed(0)
    net = SmallResNet(1, [16, 32, 64], [1, 1, 1])
    n = count_parameters(net)
    assert 70_000 <= n <= 80_000, n
    assert n == sum(p.numel() for p in net.parameters())
    assert net.out_dim == 64
    out = net(torch.rand(2, 1, 16, 16))
    assert out.shape == (2, 64)
    assert torch.isfinite(out).all()


def test_small_resnet_blocks_start_as_identity():
    net = SmallResNet(1, [8, 16], [2, 1])
    from torchvision.models.resnet import BasicBlock

    blocks = [m for m in net.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 3
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for b in blocks)
    # the second stage halves the resolution
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 16)


def test_small_resnet_mismatched_lengths():
    with pytest.raises(ValueError):
        SmallResNet(1, [16, 32], [1])


def test_build_backbone_small_resnet():
    net = build_backbone(SMALL, in_channels=1)
    assert isinstance(net, SmallResNet) and net.out_dim == 64
    rgb = build_backbone(SMALL, in_channels=3)
    assert rgb(torch.rand(2, 3, 16, 16)).shape == (2, 64)


def test_build_backbone_resnet18():
    torch.manual_seed(0)
    net = build_backbone({"arch": "resnet18"}, in_channels=3)
    assert net.out_dim == 512
    assert isinstance(net.fc, nn.Identity)
    net.eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 512)
    assert torch.isfinite(out).all()


def test_build_backbone_resnet18_single_channel():
    net = build_backbone({"arch": "resnet18"}, in_channels=1)
    assert net.conv1.in_channels == 1
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(2, 1, 32, 32)).shape == (2, 512)


@pytest.mark.parametrize("arch", ["resnet34", "vit", ""])
def test_build_backbone_unknown_arch(arch):
    with pytest.raises(ValueError, match="arch"):
        build_backbone({"arch": arch}, in_channels=3)


def test_projector_layer_pattern():
    head = projector(64, [32, 32, 16])
    assert layer_types(head) == [
        nn.Linear, nn.BatchNorm1d, nn.ReLU,
        nn.Linear, nn.BatchNorm1d, nn.ReLU,
        nn.Linear, nn.BatchNorm1d,
    ]
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert all(m.bias is None for m in linears)
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 32), (32, 16)]
    assert [m.num_features for m in head if isinstance(m, nn.BatchNorm1d)] == [32, 32, 16]
    assert head(torch.randn(4, 64)).shape == (4, 16)


def test_projector_single_layer():
    head = projector(10, [5])
    assert layer_types(head) == [nn.Linear, nn.BatchNorm1d]


def test_equivariance_head_layer_pattern():
    head = equivariance_head(64, [32, 32, 8], 4)
    assert layer_types(head) == [
        nn.Linear, nn.LayerNorm, nn.ReLU,
        nn.Linear, nn.LayerNorm, nn.ReLU,
        nn.Linear, nn.LayerNorm,
        nn.Linear,
    ]
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 32), (32, 8), (8, 4)]
    assert all(m.bias is not None for m in linears)
    out = head(torch.randn(5, 64))
    assert out.shape == (5, 4)
    # a single sample works too (LayerNorm, not BatchNorm)
    assert head(torch.randn(1, 64)).shape == (1, 4)


def test_contrastive_and_supervised_models():
    backbone = build_backbone(SMALL, in_channels=1)
    model = ContrastiveModel(backbone, [32, 16], equivariance_head(64, [16], 2))
    assert [m.out_features for m in model.projector if isinstance(m, nn.Linear)] == [32, 16]
    assert model.eq_head is not None
    sup = SupervisedModel(build_backbone(SMALL, in_channels=1), num_classes=10)
    assert sup(torch.rand(3, 1, 16, 16)).shape == (3, 10)
