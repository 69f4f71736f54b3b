"""Test-only start-up hook for the workflow tests on fixture datasets.

The fixture files of CIFAR and Flowers-102 are not the release files, so the
md5 digests torchvision hard-codes can never match them, and the workflow's
jobs run in subprocesses where pytest's monkeypatch cannot reach. When a test
puts this folder on PYTHONPATH and sets MULTISYM_TEST_FIXTURE_RELEASES=1, every
Python process applies the same patch as dataset_fixtures.patch_integrity_checks
(the md5 comparison is skipped, a missing file still fails), as torchvision's
own dataset tests do. Nothing else is changed.

The patch is applied when a process first imports one of the two dataset
modules, not at start-up: importing torchvision costs about 2 s, and most of
the workflow's processes (Snakemake itself, the tables, the figures) never
import it.
"""

import importlib.abc
import importlib.machinery
import os
import sys

PATCHED = ("torchvision.datasets.cifar", "torchvision.datasets.flowers102")


def _exists_only(fpath, md5=None):
    from torchvision.datasets.utils import check_integrity

    return check_integrity(os.fspath(fpath), None)


class _PatchAfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the two modules as the other finders do, runs them, then replaces
    their ``check_integrity``."""

    def __init__(self):
        self._loaders = {}

    def find_spec(self, fullname, path, target=None):
        if fullname not in PATCHED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            return None
        self._loaders[fullname] = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loaders[spec.name].create_module(spec)

    def exec_module(self, module):
        self._loaders[module.__name__].exec_module(module)
        module.check_integrity = _exists_only


if os.environ.get("MULTISYM_TEST_FIXTURE_RELEASES") == "1":
    sys.meta_path.insert(0, _PatchAfterImport())
