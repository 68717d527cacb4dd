import socket
import threading
import time

import numpy as np
import pytest
import torch

from transferlab import env


def draw() -> tuple:
    import random

    return random.random(), float(np.random.rand()), torch.rand(3)


def test_seed_everything_repeats_python_numpy_and_torch():
    env.seed_everything(123)
    a = draw()
    env.seed_everything(123)
    b = draw()
    env.seed_everything(124)
    c = draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert a[0] != c[0] and not torch.equal(a[2], c[2])


def test_seed_everything_turns_on_deterministic_algorithms():
    torch.use_deterministic_algorithms(False)
    env.seed_everything(0)
    assert torch.are_deterministic_algorithms_enabled()
    env.seed_everything(0, deterministic=False)  # leaves the setting alone
    assert torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)


def test_get_device_defaults_and_override(monkeypatch):
    monkeypatch.delenv("TRANSFERLAB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert env.get_device().type == expected
    monkeypatch.setenv("TRANSFERLAB_DEVICE", "cpu")
    assert env.get_device() == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_get_device_refuses_missing_cuda():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        env.get_device("cuda")


def test_network_check_returns_within_timeout_even_if_dns_hangs(monkeypatch):
    monkeypatch.delenv("TRANSFERLAB_OFFLINE", raising=False)
    release = threading.Event()

    def hang(*args, **kwargs):  # a DNS lookup that never answers, until the test ends
        release.wait(30)
        raise OSError("simulated hang")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.perf_counter()
    try:
        assert env.network_available(timeout=0.5) is False
        # the hang lasts 30 s: returning well before it proves the timeout works; 15 s leaves room for a busy machine
        assert time.perf_counter() - start < 15
    finally:
        release.set()


def test_offline_switch_never_connects(monkeypatch):
    calls = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: calls.append(a))
    monkeypatch.setenv("TRANSFERLAB_OFFLINE", "1")
    assert env.network_available() is False
    assert calls == []


def test_network_check_sees_a_local_listener(monkeypatch):
    monkeypatch.delenv("TRANSFERLAB_OFFLINE", raising=False)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    threading.Thread(target=lambda: server.accept()[0].close(), daemon=True).start()
    try:
        assert env.network_available(("127.0.0.1", port), timeout=2.0) is True
    finally:
        server.close()


def test_environment_report_fields(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    report = env.environment_report(check_network=False)
    assert report.torch == torch.__version__
    assert report.hub_cache == str(tmp_path / "hub")
    assert report.cpu_threads == torch.get_num_threads()
    assert report.online is False
    text = str(report)
    assert "torchvision" in text and "hub_cache" in text


def test_to_device_puts_image_batches_in_channels_last_and_keeps_their_values():
    images = torch.rand(2, 3, 5, 7)
    moved = env.to_device(images, "cpu")
    assert moved.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous(
        memory_format=torch.channels_last
    )
    assert moved.shape == images.shape and torch.equal(moved, images)
    vectors = torch.rand(4, 6)  # not an image batch: only moved
    assert env.to_device(vectors, "cpu").is_contiguous() and torch.equal(env.to_device(vectors, "cpu"), vectors)
