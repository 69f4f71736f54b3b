"""Review tiers: which training steps each tier refuses, before they start."""

from __future__ import annotations

import pytest

from multisym.cluster.jobs import TIER_ALLOWS, check_review_tier
from multisym.errors import UserError


@pytest.mark.parametrize("tier, step, allowed", [
    ("scratch", "pretrain", True), ("scratch", "adapt", True),
    ("checkpoints", "pretrain", False), ("checkpoints", "adapt", True),
    ("results", "pretrain", False), ("results", "adapt", False),
])
def test_each_tier_allows_exactly_its_steps(tier, step, allowed):
    assert (step in TIER_ALLOWS[tier]) == allowed
    if allowed:
        check_review_tier(tier, step, "out/model.pt")
        return
    with pytest.raises(UserError) as error:
        check_review_tier(tier, step, "out/model.pt")
    message = str(error.value)
    assert f"review tier {tier!r}" in message and "review.tier" in message and "out/model.pt" in message
    assert "Nothing was trained" in message
    assert ("members.imported" in message) == (tier == "checkpoints")


def test_a_refused_pretraining_leaves_no_run_folder(tmp_path):
    """The refusal comes from the CLI before any file is touched."""
    import subprocess
    import sys

    run = tmp_path / "members" / "eq-s1"
    result = subprocess.run(
        [sys.executable, "-m", "multisym.cli", "pretrain", "--settings-json", "{}", "--data", "d.npz",
         "--manifest", "m.json", "--run-dir", str(run), "--out-model", str(run / "model.pt"),
         "--out-log", str(run / "epochs.csv"), "--review-tier", "checkpoints"],
        capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0 and "review tier 'checkpoints'" in result.stderr
    assert not run.exists()
