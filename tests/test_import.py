"""Importing existing checkpoints as members (issue: the review tier that starts
from published weights)."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18

from multisym.train.models import CheckpointImportError, build_backbone, import_checkpoint

SMALL = {"arch": "small_resnet", "widths": [4, 8], "blocks": [1, 1]}
RESNET18 = {"arch": "resnet18", "widths": [16], "blocks": [1]}


def small_state():
    torch.manual_seed(0)
    return build_backbone(SMALL, 1).state_dict()


def test_official_release_format_with_module_prefix(tmp_path):
    state = small_state()
    path = tmp_path / "official.pth"
    torch.save({"backbone": {f"module.{k}": v for k, v in state.items()}, "projector": {}}, path)
    parts = import_checkpoint(path, SMALL, 1, "eq")
    assert set(parts) == {"backbone"}
    for key, value in state.items():
        assert torch.equal(parts["backbone"][key], value)


def test_plain_torchvision_state_dict_keeps_fc_for_supervised(tmp_path):
    net = resnet18(num_classes=10)
    path = tmp_path / "plain.pth"
    torch.save(net.state_dict(), path)
    parts = import_checkpoint(path, RESNET18, 3, "sup")
    assert torch.equal(parts["classifier"]["weight"], net.fc.weight)
    assert torch.equal(parts["backbone"]["conv1.weight"], net.conv1.weight)
    ssl = import_checkpoint(path, RESNET18, 3, "base")
    assert set(ssl) == {"backbone"}


def test_wrong_architecture_fails_strictly(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(resnet18().state_dict(), path)
    with pytest.raises(CheckpointImportError, match="does not match the configured backbone"):
        import_checkpoint(path, SMALL, 1, "base")


def test_wrong_prefix_fails_instead_of_random_weights(tmp_path):
    state = small_state()
    path = tmp_path / "prefixed.pth"
    torch.save({f"encoder.{k}": v for k, v in state.items()}, path)
    with pytest.raises(CheckpointImportError, match="missing keys"):
        import_checkpoint(path, SMALL, 1, "base")


def test_supervised_import_needs_its_classifier(tmp_path):
    path = tmp_path / "nofc.pth"
    torch.save(small_state(), path)
    with pytest.raises(CheckpointImportError, match="classifier"):
        import_checkpoint(path, SMALL, 1, "sup")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "pickle.pth"
    torch.save({"backbone": small_state(), "args": object()}, path)
    with pytest.raises(CheckpointImportError, match="weights-only"):
        import_checkpoint(path, SMALL, 1, "base")
