"""Fixtures shared by the test modules."""

from pathlib import Path

import pytest

from factrfm.datasets import paths


@pytest.fixture
def uci_root() -> Path:
    """The shared data folder holding ``uci121/``; the test is skipped, saying why, without it."""
    try:
        root = paths.data_dir()
    except FileNotFoundError as err:
        pytest.skip(f"shared data folder absent: {err}")
    if not (root / "uci121").is_dir():
        pytest.skip(f"no uci121 folder under {root}")
    return root
