"""Shared test settings: small thread count, and the paths tests need."""

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

torch.set_num_threads(2)


@pytest.fixture
def root() -> Path:
    return ROOT
