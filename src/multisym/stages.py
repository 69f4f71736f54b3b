"""How each stage computes, as a version number.

Every analysis rule carries its stage's version in its ``params``, so
Snakemake reruns exactly that stage and what depends on it when the number
changes, and nothing when a module is edited without changing any result (a
comment, a refactor). The training stages' versions (pretrain, finetune) are
part of each member's settings instead, so a new version trains new members
in new run folders beside the old ones, never over them. Bump a stage's
number in the same commit that changes what it computes.

Imported by the Snakefile while planning, so it imports nothing (no torch).
"""

from __future__ import annotations

VERSIONS: dict[str, int] = {
    "pretrain": 1,
    "finetune": 1,
    "probe": 3,
    "sup_logits": 1,
    "member_metrics": 5,
    "ensemble": 5,
    "dataset_summary": 2,
    "shift_sets": 1,
    "shift_logits": 2,
    "shift_metrics": 1,
    "evaluation_logits": 2,
    "audit_sets": 1,
    "audit_outputs": 1,
    "audit_metrics": 2,
    "emergence": 3,
    "emergence_metrics": 4,
    "emergence_init": 1,
    "ising": 2,
    "table": 3,
    "figure": 3,
    "comparison": 2,
    "protocol": 1,
    "claims": 1,
}


def stage_version(stage: str) -> int:
    try:
        return VERSIONS[stage]
    except KeyError:
        raise KeyError(f"no version for stage {stage!r}; known stages: {sorted(VERSIONS)}") from None
