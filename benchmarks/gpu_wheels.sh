#!/usr/bin/env bash
# Fills .whl/ (ignored by git) with the wheels that gpu_session.sh installs on a
# lent GPU machine, which has torch, torchvision, scikit-learn, scipy, pyyaml and
# attrs but no package registry (.library/device/KINDS.md lists what it holds):
# submitit (GPU jobs), jsonschema and what it needs (the config's schema), and
# lightly 1.6.0 (pretrain_step.py's comparison; its loss, head and LARS import
# without hydra). Built for the machine's Python 3.12 on x86-64. Run it from the
# repository root before the first `run` of a session, then carry `.whl`.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .git/info
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
rm -rf .whl
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl \
    lightly==1.6.0 submitit jsonschema jsonschema-specifications referencing rpds-py
ls .whl
