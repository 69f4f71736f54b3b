"""Multi-Symmetry Ensembles (Loh et al., ICML 2023, arXiv 2303.02484), reproduced.

The package the Snakemake workflow calls: one module per concept (see README.md, Layout).
Importing the package itself stays light (no torch), so that the Snakefile can
use `multisym.config` and `multisym.members` while planning.
"""

__version__ = "0.1.0"
