"""Shared test settings: small thread count, the `slow` marker, and the paths tests need."""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# Test modules that start servers or other processes: marked `slow`, so `make unit` (`-m "not slow"`) leaves them out.
SLOW_MODULES = {"test_lab.py"}  # starts JupyterLab

# Under pytest-xdist (`-n 2`) every worker is its own process: one thread each keeps 2 workers on 2 cores.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
# The suite never touches the network: the environment report (and every notebook kernel, which inherits this
# variable) then answers "offline" without trying to connect.
os.environ["TRANSFERLAB_OFFLINE"] = "1"


def pytest_configure(config: pytest.Config) -> None:
    # Registered here because the pytest settings in pyproject.toml are the lead's; --strict-markers then accepts it.
    config.addinivalue_line("markers", "slow: starts servers or subprocesses; excluded from `make unit`")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def root() -> Path:
    return ROOT
