"""Tests for transferlab.probes: nearest class mean and the grey histogram against plain NumPy/PyTorch."""

import numpy as np
import pytest
import torch

from transferlab.probes import grey_histogram, l2_normalise, nearest_class_mean


def test_l2_normalise_matches_torch():
    x = torch.randn(5, 7)
    assert torch.allclose(l2_normalise(x), torch.nn.functional.normalize(x, dim=1))
    assert torch.equal(l2_normalise(torch.zeros(1, 3)), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="shape"):
        l2_normalise(torch.randn(2, 3, 4))


def test_nearest_class_mean_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    train, labels, test = torch.randn(12, 5, generator=g), torch.tensor([2, 0, 1] * 4), torch.randn(30, 5, generator=g)
    for normalise in (False, True):
        tr, te = (l2_normalise(train), l2_normalise(test)) if normalise else (train, test)
        means = {c: tr[labels == c].mean(0) for c in (0, 1, 2)}
        expected = [min(means, key=lambda c: float((v - means[c]).norm())) for v in te]
        assert nearest_class_mean(train, labels, test, normalise=normalise).tolist() == expected


def test_normalising_ignores_the_length():
    train, labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    far = torch.tensor([[10.0, 9.0]])  # direction closer to class 0, Euclidean position nearer neither
    assert nearest_class_mean(train, labels, far).tolist() == [0]
    assert nearest_class_mean(train * 100, labels, far).tolist() == [0]  # lengths do not matter
    with pytest.raises(ValueError, match="one label per row"):
        nearest_class_mean(train, torch.tensor([0]), far)


def test_grey_histogram_matches_numpy():
    images = torch.rand(4, 3, 16, 16)
    images[0, 0, 0, 0] = 1.0
    found = grey_histogram(images, bins=8)
    for i in range(4):
        counts, _ = np.histogram(images[i, 0].numpy(), bins=8, range=(0.0, 1.0))
        assert np.allclose(found[i].numpy(), counts / 256)
    assert torch.allclose(found.sum(1), torch.ones(4))
    # shift-invariant: rolling the image does not change it
    assert torch.equal(grey_histogram(images.roll(5, dims=3)), grey_histogram(images))
    with pytest.raises(ValueError, match="shape"):
        grey_histogram(torch.rand(16, 16))
