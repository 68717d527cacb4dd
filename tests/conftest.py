"""Shared test settings: small thread count, and the paths tests need."""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

torch.set_num_threads(2)
# The suite never touches the network: the environment report (and every notebook kernel, which inherits this
# variable) then answers "offline" without trying to connect.
os.environ["TRANSFERLAB_OFFLINE"] = "1"


@pytest.fixture
def root() -> Path:
    return ROOT
