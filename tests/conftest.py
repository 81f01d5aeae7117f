"""Shared test fixtures: the real reference records live in ../shared/data beside the repository."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real reference records not found at {SHARED_DATA} (the ../shared/data folder beside the repo)")
    return SHARED_DATA
