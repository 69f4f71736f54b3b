"""multisym's processes import torchvision without loading torch._dynamo, and
torch._dynamo still loads, whole and real, when something asks for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(SRC), "PATH": ""})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_torchvision_imported_after_multisym_leaves_dynamo_unloaded_and_roi_align_working():
    out = run_python(
        "import sys, multisym, torch, torchvision\n"
        "from torchvision.ops import roi_align\n"
        "print('torch._dynamo' in sys.modules, 'torch._dynamo.utils' in sys.modules)\n"
        "boxes = torch.tensor([[0, 0., 0., 3., 3.]])\n"
        "x = torch.arange(16.).view(1, 1, 4, 4)\n"
        "print(roi_align(x, boxes, 1, aligned=True).item() == x[0, 0, :3, :3].mean().item())\n"
    )
    assert out.split() == ["False", "False", "True"]  # aligned: the samples are the pixel centres 0, 1, 2


def test_dynamo_loaded_later_is_the_real_module():
    out = run_python(
        "import sys, multisym, torch, torchvision\n"
        "module = sys.modules['torchvision.ops.roi_align']\n"
        "print(module.is_compile_supported('cpu'))\n"
        "import torch._dynamo.utils as utils\n"
        "print(utils.__file__.endswith('torch/_dynamo/utils.py'), hasattr(utils, 'counters'))\n"
        "print(torch.compile(lambda a: a * 2, backend='eager')(torch.ones(2)).tolist())\n"
    )
    assert out.split() == ["True", "True", "True", "[2.0,", "2.0]"]


def test_nothing_is_deferred_when_dynamo_is_already_loaded():
    out = run_python(
        "import sys, torch._dynamo, multisym, torchvision\n"
        "module = sys.modules['torchvision.ops.roi_align']\n"
        "print(module.is_compile_supported is sys.modules['torch._dynamo.utils'].is_compile_supported)\n"
    )
    assert out.split() == ["True"]
