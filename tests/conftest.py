"""Shared test settings: small thread count, the `slow` marker, and the paths tests need."""

import os
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# Test modules that start servers or other processes: marked `slow`, so `make unit` (`-m "not slow"`) leaves them out.
SLOW_MODULES = {"test_lab.py"}  # starts JupyterLab

# `make test` runs two pytest-xdist workers on 2 cores: one thread each, in the tests and in every process they
# start. Notebook kernels inherit these variables before numpy and torch load, so OpenBLAS and OpenMP start one
# thread too: two processes whose libraries each spin up a thread per core slow each other down many times over
# (a notebook-08 cell took 147 s that way, 3.5 s with one thread each). The notebooks set one torch thread themselves.
# TRANSFERLAB_TEST_THREADS=2 runs the whole suite with two threads per process instead (cells whose numbers a lesson
# compares exactly pin their own count with `num_threads(1)`, so both must pass).
THREADS = int(os.environ.get("TRANSFERLAB_TEST_THREADS", "1"))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(THREADS)
torch.set_num_threads(THREADS)
threadpool_limits(THREADS)  # numpy's BLAS in this process, already loaded
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


# Kernels started by tests (nbval, nbclient) run in other directories: a relative PYTHONPATH such as
# `PYTHONPATH=src` must still point them at this checkout's package.
if os.environ.get("PYTHONPATH"):
    _paths = [str(Path(p).resolve()) for p in os.environ["PYTHONPATH"].split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(_paths)

# Slow checks that run as their own step (`make check-exercises`, `make check-browser`, `make check-launches`, in
# .ci/run), not in `pytest`:
# they run when selected with `-m NAME` or when their file is named on the command line.
OPT_IN_MARKERS = {
    "exercises": "executes each notebook's student edition: every self-check must fail on the stub (slow)",
    "browser": "drives JupyterLab in headless Chromium",
    "launches": "launches real torchrun jobs (2 processes each, about 15 s a launch); notebook 11 launches some too",
}


@pytest.hookimpl(specname="pytest_configure")
def pytest_configure_opt_in_markers(config: pytest.Config) -> None:
    for name, doc in OPT_IN_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")


@pytest.hookimpl(specname="pytest_collection_modifyitems")
def pytest_collection_modifyitems_opt_in(config: pytest.Config, items: list[pytest.Item]) -> None:
    markexpr = config.getoption("markexpr") or ""
    here = config.invocation_params.dir
    named = {(here / arg.split("::")[0]).resolve() for arg in config.args}
    keep, drop = [], []
    for item in items:
        opt_in = [name for name in OPT_IN_MARKERS if item.get_closest_marker(name)]
        chosen = any(name in markexpr for name in opt_in) or Path(item.path).resolve() in named
        (drop if opt_in and not chosen else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
