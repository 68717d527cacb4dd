"""transferlab.distributed: the DDP fine-tuning script, launched for real with torchrun (2 CPU processes, gloo).

The three torchrun launches are marked ``launches``: they run as their own step (`make check-launches`, .ci/run),
outside the 5-minute suite, which still launches torchrun three times through notebook 11. The rest runs in it.

Every launch is bounded (a subprocess timeout, a process-group timeout) and cleaned up: torchrun starts its workers
in sessions of their own, so after each launch the test looks for any process still carrying the test's unique
output path on its command line, and kills (then reports) it.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from transferlab import distributed
from transferlab.data import target_dataset
from transferlab.models import TinyResNet_Weights, tiny_resnet
from transferlab.training import evaluate

SRC = Path(distributed.__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]  # what the `torchrun` command runs
FAST = ["--steps", "3", "--test-size", "100"]  # a few steps, a small test shard; the default 60 s timeout
LAUNCH_TIMEOUT = 300  # seconds: a quiet 2-core machine needs about 10 s per launch, a loaded one minutes


def _env() -> dict[str, str]:
    # One thread per process (2 processes on 2 cores) and no torchrun warning about it; the package under test.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC), "TRANSFERLAB_OFFLINE": "1"}


def _survivors(marker: str) -> list[int]:
    """PIDs of processes whose command line contains ``marker`` (each test passes a unique --out path)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return [p for p in pids if p != os.getpid()]


def _kill(procs: list[subprocess.Popen], marker: str) -> list[int]:
    """End the launchers (SIGTERM lets torchrun stop its workers), then kill anything left; return what was left."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
    time.sleep(0.2)
    left = _survivors(marker)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def _run(commands: list[list[str]], marker: str) -> list[tuple[int, str, str]]:
    """Start every command at once, wait for all (bounded), always clean up; returns (rc, stdout, stderr) each."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                              start_new_session=True) for c in commands]
    try:
        outputs = [p.communicate(timeout=LAUNCH_TIMEOUT) for p in procs]
        return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]
    finally:
        left = _kill(procs, marker)
        assert not left, f"processes left behind after the launch: {left}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_checkpoint(path: Path, world_size: int) -> dict:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert not [k for k in checkpoint["model"] if k.startswith("module.")], "rank 0 saved DDP's module. prefix"
    plain = tiny_resnet(weights=None, num_classes=10)
    plain.load_state_dict(checkpoint["model"])  # strict: every key and shape fits a plain model
    assert checkpoint["world_size"] == world_size and checkpoint["steps"] == 3
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "a temporary file was left behind"
    return checkpoint


@pytest.mark.launches
def test_two_processes_fine_tune_and_rank0_saves_a_plain_checkpoint(tmp_path):
    out = tmp_path / "ddp.pt"
    cmd = [*TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "transferlab.distributed", *FAST, "--out",
           str(out)]
    [(rc, stdout, stderr)] = _run([cmd], str(out))
    assert rc == 0, f"torchrun failed ({rc}):\n{stdout}\n{stderr}"
    assert "world size 2 (backend gloo, device cpu)" in stdout and "global batch 20 = 2 x 10" in stdout, stdout
    assert "(steps 1-3, all-reduced over 2 processes)" in stdout and "keys without 'module.'" in stdout, stdout
    assert stdout.count("test accuracy") == 1, "only rank 0 should log"
    assert "OMP_NUM_THREADS" not in stderr, stderr
    checkpoint = _check_checkpoint(out, world_size=2)
    assert len(checkpoint["train_loss"]) == 3
    # The saved model is the one that was evaluated (rank 0's BatchNorm statistics were shared before evaluating).
    model = tiny_resnet(weights=None, num_classes=10)
    model.load_state_dict(checkpoint["model"])
    test = target_dataset("test", transform=TinyResNet_Weights.DEFAULT.transforms())
    _, acc = evaluate(model, DataLoader(Subset(test, range(100)), batch_size=100))
    assert acc == checkpoint["test_acc"], f"reloaded model scores {acc}, the run reported {checkpoint['test_acc']}"


@pytest.mark.launches
def test_two_nodes_meet_through_a_c10d_rendezvous_on_localhost(tmp_path):
    """Two torchrun launchers, one process each, as two machines would: same endpoint, same job id."""
    out = tmp_path / "nodes.pt"
    launcher = [*TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--rdzv-id", f"transferlab-{os.getpid()}"]
    script = ["-m", "transferlab.distributed", *FAST, "--out", str(out)]
    results = _run([launcher + script, launcher + script], str(out))
    for rc, stdout, stderr in results:
        assert rc == 0, f"a launcher failed ({rc}):\n{stdout}\n{stderr}"
    logs = "".join(stdout for _, stdout, _ in results)
    assert "world size 2" in logs and logs.count("test accuracy") == 1, logs
    _check_checkpoint(out, world_size=2)


@pytest.mark.launches
def test_a_failing_rank_ends_the_job_with_its_error_and_no_checkpoint(tmp_path):
    out = tmp_path / "never.pt"
    cmd = [*TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "transferlab.distributed", *FAST,
           "--out", str(out), "--fail-rank", "1", "--fail-at-step", "2"]
    start = time.monotonic()
    [(rc, stdout, stderr)] = _run([cmd], str(out))
    assert rc != 0, "the job should fail"
    assert "rank 1: injected failure at step 2" in stderr, stderr
    root_cause = stderr.split("Root Cause", 1)[-1]
    assert "rank      : 1" in root_cause and "injected failure" in root_cause, "torchrun should blame rank 1"
    assert not list(tmp_path.iterdir()), f"no checkpoint (or temporary file) expected, found {list(tmp_path.iterdir())}"
    assert time.monotonic() - start < LAUNCH_TIMEOUT  # ended by itself, not by our timeout


@pytest.fixture
def one_process(monkeypatch):
    """Run ``main`` in this process as a one-process job (no launcher variables)."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    yield
    assert not torch.distributed.is_initialized(), "main() must destroy its process group"


def test_a_missing_weights_file_is_a_clear_error_and_the_group_is_destroyed(one_process, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        distributed.main(["--weights", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt")])
    assert not list(tmp_path.iterdir())


def test_weights_that_are_not_a_tiny_resnet_are_refused(one_process, tmp_path):
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "linear.pt")
    with pytest.raises(ValueError, match="not a TinyResNet state_dict"):
        distributed.main(["--weights", str(tmp_path / "linear.pt"), "--out", str(tmp_path / "x.pt")])
    wrong = tiny_resnet(weights=None).state_dict()
    wrong["conv1.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="does not fit TinyResNet"):
        distributed.load_pretrained(str(tmp_path / "wrong.pt"))


def test_one_process_without_a_launcher_trains_and_saves(one_process, tmp_path):
    out = tmp_path / "single.pt"
    distributed.main([*FAST, "--out", str(out)])
    _check_checkpoint(out, world_size=1)


def test_loading_pretrained_matches_the_published_weights():
    model = distributed.load_pretrained("DEFAULT")
    reference = tiny_resnet(weights="DEFAULT").state_dict()
    assert model.fc.out_features == 10
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items() if not k.startswith("fc."))


SHARDING_PROBLEMS = [(100, 20, 3, "cannot be split evenly"), (100, 2, 4, "cannot be split evenly"),
                     (10, 20, 2, "do not fill")]


@pytest.mark.parametrize(("n", "batch", "world", "problem"), SHARDING_PROBLEMS)
def test_more_processes_than_the_data_can_shard_is_a_clear_error(n, batch, world, problem):
    with pytest.raises(ValueError, match=problem):
        distributed.per_rank_batch(n, batch, world)
    assert distributed.per_rank_batch(100, 20, 4) == 5


def test_shards_are_disjoint_and_cover_the_dataset():
    shards = [list(distributed.shard_indices(101, r, 4)) for r in range(4)]
    assert sorted(i for s in shards for i in s) == list(range(101))


def test_backend_follows_the_hardware():
    expected = "nccl" if torch.cuda.is_available() else "gloo"
    assert distributed.choose_backend() == expected and distributed.choose_backend("gloo") == "gloo"
