#!/usr/bin/env bash
# Snakemake runs this inside the new conda environment after creating it, from the
# workflow's working directory (the repository root): install the project itself,
# without touching the pinned dependencies above.
set -euo pipefail
pip install --no-deps --no-build-isolation -e .
