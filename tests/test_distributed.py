"""transferlab.distributed (the DDP building blocks) and notebooks/ddp_finetune.py (notebook 11's DDP fine-tuning
script), the script launched for real with torchrun (2 CPU processes, gloo).

The torchrun launches are marked ``launches``: they run as their own step (`make check-launches`, .ci/run),
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
from transferlab.serialization import IncompleteLoadError
from transferlab.training import evaluate

from conftest import ROOT

SRC = Path(distributed.__file__).resolve().parents[1]
SCRIPT = ROOT / "notebooks" / "ddp_finetune.py"  # next to notebook 11, which teaches it
sys.path.insert(0, str(SCRIPT.parent))
import ddp_finetune  # noqa: E402

# A crash on cue, as notebook 11 makes one: a wrapper that runs the script's main with a before_step hook that makes
# rank RANK raise before step STEP, on the job's first attempt only (a job restarted by torchrun then runs through).
CRASH_ONCE = """
import os
import sys

import ddp_finetune

rank, step, *argv = sys.argv[1:]


def crash_once(r, s):
    if (r, s) == (int(rank), int(step)) and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
        raise RuntimeError(f"rank {r}: simulated crash before step {s}")


ddp_finetune.main(argv, before_step=crash_once)
"""
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]  # what the `torchrun` command runs
FAST = ["--steps", "3", "--test-size", "100"]  # a few steps, a small test shard; the default 60 s timeout
LAUNCH_TIMEOUT = 300  # seconds: a quiet 2-core machine needs about 10 s per launch, a loaded one minutes


def _env(**extra: str) -> dict[str, str]:
    # One thread per process (2 processes on 2 cores) and no torchrun warning about it; the package under test.
    # The wrapper script imports ddp_finetune from notebooks/.
    path = os.pathsep.join([str(SRC), str(SCRIPT.parent)])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "TRANSFERLAB_OFFLINE": "1", **extra}


def _crash_once(folder: Path, rank: int, step: int) -> list[str]:
    """The script's command line through the CRASH_ONCE wrapper (written into ``folder``)."""
    folder.mkdir(exist_ok=True)
    (folder / "crash_once.py").write_text(CRASH_ONCE)
    return [str(folder / "crash_once.py"), str(rank), str(step)]


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


def _run(
    commands: list[list[str]], marker: str, envs: list[dict[str, str]] | None = None
) -> list[tuple[int, str, str]]:
    """Start every command at once, wait for all (bounded), always clean up; returns (rc, stdout, stderr) each."""
    envs = envs or [_env() for _ in commands]
    procs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        for c, env in zip(commands, envs, strict=True)
    ]
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
    cmd = [
        *TORCHRUN,
        "--standalone",
        "--nproc_per_node",
        "2",
        str(SCRIPT),
        *FAST,
        "--out",
        str(out),
    ]
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
    launcher = [
        *TORCHRUN,
        "--nnodes",
        "2",
        "--nproc_per_node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{_free_port()}",
        "--rdzv-id",
        f"transferlab-{os.getpid()}",
    ]
    script = [str(SCRIPT), *FAST, "--out", str(out)]
    results = _run([launcher + script, launcher + script], str(out))
    for rc, stdout, stderr in results:
        assert rc == 0, f"a launcher failed ({rc}):\n{stdout}\n{stderr}"
    logs = "".join(stdout for _, stdout, _ in results)
    assert "world size 2" in logs and logs.count("test accuracy") == 1, logs
    _check_checkpoint(out, world_size=2)


@pytest.mark.launches
def test_a_failing_rank_ends_the_job_with_its_error_and_no_checkpoint(tmp_path):
    out = tmp_path / "run" / "never.pt"
    out.parent.mkdir()
    cmd = [*TORCHRUN, "--standalone", "--nproc_per_node", "2", *_crash_once(tmp_path / "bin", 1, 2), *FAST]
    start = time.monotonic()
    [(rc, _stdout, stderr)] = _run([[*cmd, "--out", str(out)]], str(out))
    assert rc != 0, "the job should fail"
    assert "rank 1: simulated crash before step 2" in stderr, stderr
    root_cause = stderr.split("Root Cause", 1)[-1]
    assert "rank      : 1" in root_cause and "simulated crash" in root_cause, "torchrun should blame rank 1"
    left = list(out.parent.iterdir())
    assert not left, f"no checkpoint (or temporary file) expected, found {left}"
    assert time.monotonic() - start < LAUNCH_TIMEOUT  # ended by itself, not by our timeout


@pytest.mark.launches
def test_an_elastic_job_restarts_resumes_from_its_snapshot_and_ends_as_an_uninterrupted_one(tmp_path):
    """Rank 1 dies at step 7 of 8; torchrun restarts both processes once; they resume from the step-5 snapshot."""
    steps = ["--steps", "8", "--test-size", "100"]
    plain = [
        *TORCHRUN,
        "--standalone",
        "--nproc_per_node",
        "2",
        str(SCRIPT),
        *steps,
        "--out",
        str(tmp_path / "plain.pt"),
    ]
    elastic = [
        *TORCHRUN,
        "--standalone",
        "--nproc_per_node",
        "2",
        "--max-restarts",
        "1",
        *_crash_once(tmp_path / "bin", 1, 7),
        *steps,
        "--out",
        str(tmp_path / "elastic.pt"),
        "--snapshot",
        str(tmp_path / "snapshot.pt"),
    ]
    (rc_p, out_p, err_p), (rc_e, out_e, err_e) = _run([plain, elastic], str(tmp_path))
    assert rc_p == 0 and not err_p, f"the uninterrupted run failed ({rc_p}):\n{out_p}\n{err_p}"
    assert rc_e == 0, f"the elastic run should recover ({rc_e}):\n{out_e}\n{err_e}"
    assert "rank 1: simulated crash before step 7" in err_e, err_e
    assert "resumed from" in out_e and "at step 5 (restart 1)" in out_e, out_e
    assert out_e.count("world size 2") == 2, "two attempts expected"
    a = torch.load(tmp_path / "plain.pt", weights_only=True)
    b = torch.load(tmp_path / "elastic.pt", weights_only=True)
    assert b["resumed_at"] == 5 and a["resumed_at"] == 0
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), "resumed weights differ"
    assert a["train_loss"] == b["train_loss"] and a["test_acc"] == b["test_acc"]
    assert not (tmp_path / "snapshot.pt").exists(), "the finished job should remove its snapshot"


@pytest.mark.launches
def test_a_model_factory_runs_resnet50_under_torchrun(tmp_path):
    out = tmp_path / "r50.pt"
    cmd = [
        *TORCHRUN,
        "--standalone",
        "--nproc_per_node",
        "2",
        str(SCRIPT),
        "--steps",
        "1",
        "--test-size",
        "20",
        "--model",
        "torchvision.models:resnet50",
        "--out",
        str(out),
    ]
    [(rc, stdout, stderr)] = _run([cmd], str(out))
    assert rc == 0 and not stderr, f"torchrun failed ({rc}):\n{stdout}\n{stderr}"
    state = torch.load(out, weights_only=True)["model"]
    assert state["fc.weight"].shape == (10, 2048) and not [k for k in state if k.startswith("module.")]


@pytest.fixture
def one_process(monkeypatch):
    """Run ``main`` in this process as a one-process job (no launcher variables)."""
    for name in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCHELASTIC_RESTART_COUNT",
    ):
        monkeypatch.delenv(name, raising=False)
    yield
    assert not torch.distributed.is_initialized(), "main() must destroy its process group"


def test_a_missing_weights_file_is_a_clear_error_and_the_group_is_destroyed(one_process, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ddp_finetune.main(["--weights", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt")])
    assert not list(tmp_path.iterdir())


def test_weights_that_are_not_a_tiny_resnet_are_refused(one_process, tmp_path):
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "linear.pt")
    with pytest.raises(IncompleteLoadError, match="not a TinyResNet state_dict"):
        ddp_finetune.main(["--weights", str(tmp_path / "linear.pt"), "--out", str(tmp_path / "x.pt")])
    wrong = tiny_resnet(weights=None).state_dict()
    wrong["conv1.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(
        IncompleteLoadError, match=r"(?s)wrong.pt does not fit TinyResNet.*conv1.weight source \[8, 3, 3, 3\]"
    ):
        ddp_finetune.load_pretrained(str(tmp_path / "wrong.pt"))


def test_one_process_without_a_launcher_trains_and_saves(one_process, tmp_path):
    out = tmp_path / "single.pt"
    ddp_finetune.main([*FAST, "--out", str(out)])
    _check_checkpoint(out, world_size=1)


def test_loading_pretrained_matches_the_published_weights():
    model = ddp_finetune.load_pretrained("DEFAULT")
    reference = tiny_resnet(weights="DEFAULT").state_dict()
    assert model.fc.out_features == 10
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items() if not k.startswith("fc."))


SHARDING_PROBLEMS = [
    (100, 20, 3, "cannot be split evenly"),
    (100, 2, 4, "cannot be split evenly"),
    (10, 20, 2, "do not fill"),
]


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


TINY_FACTORY = """
from torch import nn

def tiny(num_classes):
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))

def not_a_model(num_classes):
    return "resnet"
"""


def test_a_model_factory_from_the_launch_folder_is_trained(one_process, tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(TINY_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))  # python -m puts the launch folder first on sys.path
    out = tmp_path / "tiny.pt"
    ddp_finetune.main(["--model", "my_models:tiny", *FAST, "--out", str(out)])
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["model"]["5.weight"].shape == (10, 4) and checkpoint["args"]["model"] == "my_models:tiny"
    for spec, problem in [
        ("my_models", "expected module:function"),
        ("no_such_module:f", "cannot import"),
        ("my_models:nothing", "has no function"),
        ("my_models:not_a_model", "not an nn.Module"),
    ]:
        with pytest.raises((ValueError, TypeError), match=problem):
            ddp_finetune.build_model(spec)
    with pytest.raises(ValueError, match="loads its own weights"):
        ddp_finetune.build_model("my_models:tiny", weights="other.pt")


def _one_process_group():
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)


def test_accumulated_micro_batches_under_no_sync_give_the_large_batch_gradient_with_one_all_reduce():
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(12, 6), torch.randint(0, 3, (12,))
    nn.functional.cross_entropy(model(x), y).backward()  # plain PyTorch: one backward over the large batch
    reference = [p.grad.clone() for p in model.parameters()]
    micro = [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]
    _one_process_group()
    try:
        ddp = DDP(model)
        rounds = []
        ddp.register_comm_hook(
            None,
            lambda state, bucket: (
                rounds.append(1),
                default_hooks.allreduce_hook(torch.distributed.group.WORLD, bucket),
            )[1],
        )
        ddp.zero_grad()
        loss = distributed.accumulate_gradients(ddp, micro)
    finally:
        torch.distributed.destroy_process_group()
    assert abs(loss - nn.functional.cross_entropy(model(x), y).item()) < 1e-5
    assert all(torch.allclose(p.grad, r, atol=1e-6) for p, r in zip(model.parameters(), reference, strict=True))
    assert len(rounds) == 1, f"one all-reduce round expected (the last micro-batch), found {len(rounds)}"
    # Negative control: summing the micro-batch losses without dividing gives 3 times the gradient.
    model.zero_grad()
    for xb, yb in micro:
        nn.functional.cross_entropy(model(xb), yb).backward()
    assert not torch.allclose(model[0].weight.grad, reference[0], atol=1e-4)
    with pytest.raises(ValueError, match="same size"):
        distributed.accumulate_gradients(model, [(x[:4], y[:4]), (x[4:], y[4:])])


def test_before_step_sees_every_step_and_a_crash_in_it_ends_the_job_without_a_checkpoint(one_process, tmp_path):
    seen = []
    ddp_finetune.main(
        [*FAST, "--out", str(tmp_path / "a.pt")], before_step=lambda rank, step: seen.append((rank, step))
    )
    assert seen == [(0, 1), (0, 2), (0, 3)]

    def crash(rank, step):
        if step == 2:
            raise RuntimeError(f"rank {rank}: simulated crash before step {step}")

    with pytest.raises(RuntimeError, match="rank 0: simulated crash before step 2"):
        ddp_finetune.main([*FAST, "--out", str(tmp_path / "b.pt")], before_step=crash)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]


def test_a_snapshot_of_another_recipe_is_refused_and_one_of_the_same_resumes(one_process, tmp_path):
    snapshot = tmp_path / "snap.pt"
    args = ddp_finetune._parser().parse_args(
        ["--steps", "8", "--snapshot", str(snapshot), "--test-size", "50", "--out", str(tmp_path / "a.pt")]
    )
    model = ddp_finetune.load_pretrained("DEFAULT")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": 5,
            "train_loss": [1.0] * 5,
            "args": {**vars(args), "steps": 15},
        },
        snapshot,
    )
    with pytest.raises(ValueError, match=r"another job .*steps: 15 there, 8 here"):
        ddp_finetune.load_snapshot(snapshot, model, optimizer, args)
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": 5,
            "train_loss": [1.0] * 5,
            "args": vars(args),
        },
        snapshot,
    )
    ddp_finetune.main(
        ["--steps", "8", "--snapshot", str(snapshot), "--test-size", "50", "--out", str(tmp_path / "a.pt")]
    )
    checkpoint = torch.load(tmp_path / "a.pt", weights_only=True)
    assert checkpoint["resumed_at"] == 5 and checkpoint["train_loss"][:5] == [1.0] * 5
    assert len(checkpoint["train_loss"]) == 8 and not snapshot.exists()
