"""torchvision without its eager import of ``torch._dynamo``.

``torchvision.ops.roi_align`` imports ``is_compile_supported`` from
``torch._dynamo.utils`` at module level, and so loads all of ``torch._dynamo``
in every process that imports torchvision, although torchvision compiles
roi_align lazily precisely so that eager-mode users do not import dynamo
(pytorch/vision#8436). It is called only when roi_align falls back to that
compiled version (no torchvision C++ ops, or deterministic algorithms on a
GPU). That import is 40 to 50 % of what a workflow job spends importing
torch and torchvision (1.1 of 2.7 s on a quick day of the CI machine), in
each of the hundred-odd jobs that build a network (``benchmarks/README.md``).

While that one module runs, ``torch._dynamo.utils`` is a stand-in whose
``is_compile_supported`` imports the real one when first called; the
stand-in is gone as soon as the module has run, so any later import of
``torch._dynamo`` is the real one. Nothing is changed when ``torch._dynamo``
is already loaded. Importing this module imports nothing heavy: the
Snakefile plans with ``multisym`` and must not load torch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

EAGER_IMPORTER = "torchvision.ops.roi_align"
DYNAMO_UTILS = "torch._dynamo.utils"


def _is_compile_supported(device_type: str) -> bool:
    return importlib.import_module(DYNAMO_UTILS).is_compile_supported(device_type)


class _DeferDynamo(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``torchvision.ops.roi_align`` as the other finders do and runs it
    with the stand-in in place."""

    def __init__(self):
        self._loader = None

    def find_spec(self, fullname, path, target=None):
        if fullname != EAGER_IMPORTER or "torch._dynamo" in sys.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            return None
        self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        stand_in = types.ModuleType(DYNAMO_UTILS)
        stand_in.is_compile_supported = _is_compile_supported
        sys.modules[DYNAMO_UTILS] = stand_in
        try:
            self._loader.exec_module(module)
        finally:
            if sys.modules.get(DYNAMO_UTILS) is stand_in:
                del sys.modules[DYNAMO_UTILS]


def defer_dynamo() -> None:
    """Install the finder once per process (before torchvision is imported)."""
    if not any(isinstance(finder, _DeferDynamo) for finder in sys.meta_path):
        sys.meta_path.insert(0, _DeferDynamo())
