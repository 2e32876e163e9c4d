"""Shared fixtures: the real-data marker and small helpers used across test files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# The real MVTec AD / MPDD subsets live beside the checkout (../shared/data), in CI too.
SHARED_DATA = Path(os.environ.get("FSAD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in {"1", "true", "yes"}


# The project's own switches, set by .ci/run: a missing asset then fails instead of skipping. Plain CI=true (set by
# every hosted CI) does not flip them, so a fork's standard workflow without ../shared or Chromium stays green.
REQUIRE_REAL_DATA = _flag("FSAD_REQUIRE_REAL_DATA")
REQUIRE_BROWSER = _flag("FSAD_REQUIRE_BROWSER")

# Tests share two cores; one intra-op thread per process keeps them from oversubscribing.
torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_data: uses the real MVTec AD / MPDD subsets in ../shared/data")
    config.addinivalue_line("markers", "slow: takes more than ~20 s on a 2-core CPU")
    config.addinivalue_line("markers", "browser: drives JupyterLab in headless Chromium")


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """Root of the real datasets; skips when absent, fails loudly under FSAD_REQUIRE_REAL_DATA=1 (.ci/run)."""
    expected = ["mvtec_ad_subset", "mpdd_subset", "mvtec_ad_256", "mvtec_ad_samples_nomask"]
    missing = [name for name in expected if not (SHARED_DATA / name).is_dir()]
    if missing:
        message = (
            f"real-data assets missing under {SHARED_DATA}: {missing}. "
            "Set FSAD_SHARED_DATA or place shared/ beside the checkout."
        )
        if REQUIRE_REAL_DATA:
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA
