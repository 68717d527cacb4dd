"""LoRA wrappers, merging and BitFit, checked against plain PyTorch; and the step-memory count."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from transferlab.lora import (
    LoRAConv2d,
    LoRALinear,
    apply_lora,
    bitfit,
    lora_layers,
    lora_state_dict,
    merge_lora,
    remove_lora,
    unmerge_lora,
)
from transferlab.memory import step_memory


def _randomise_b(layer: nn.Module) -> None:
    with torch.no_grad():
        layer.lora_B.normal_()


def test_conv_delta_is_scaled_b_times_a_and_output_matches_plain_conv() -> None:
    torch.manual_seed(0)
    base = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    layer = LoRAConv2d(base, r=2, alpha=6.0)
    _randomise_b(layer)
    w0 = base.weight.detach().clone()
    expected = w0 + 3.0 * torch.einsum("or,rikl->oikl", layer.lora_B[:, :, 0, 0], layer.lora_A)
    x = torch.randn(3, 4, 9, 9)
    plain = F.conv2d(x, expected, base.bias, stride=2, padding=1)
    torch.testing.assert_close(layer(x), plain, atol=1e-6, rtol=1e-6)
    layer.merge()
    torch.testing.assert_close(base.weight, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(layer(x), plain, atol=1e-6, rtol=1e-6)
    layer.unmerge()
    torch.testing.assert_close(base.weight, w0, atol=1e-6, rtol=1e-6)
    # negative control: the same comparison without the scaling fails, so the test can fail
    unscaled = F.conv2d(x, w0 + (expected - w0) / 3.0, base.bias, stride=2, padding=1)
    assert not torch.allclose(layer(x), unscaled, atol=1e-3)


def test_linear_matches_plain_linear_and_merge_roundtrip() -> None:
    torch.manual_seed(1)
    base = nn.Linear(5, 3)
    layer = LoRALinear(base, r=2, alpha=2.0)
    _randomise_b(layer)
    x = torch.randn(7, 5)
    merged_w = base.weight + layer.lora_B @ layer.lora_A
    torch.testing.assert_close(layer(x), F.linear(x, merged_w, base.bias), atol=1e-6, rtol=1e-6)
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()
    layer.merge()
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()


def test_zero_init_identity_and_only_lora_trains() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    )
    x = torch.randn(2, 3, 6, 6)
    before = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(model, ["0", "4"], r=2)
    assert torch.equal(model(x), before)
    model(x).sum().backward()
    with_grad = sorted(n for n, p in model.named_parameters() if p.grad is not None)
    assert with_grad == ["0.lora_A", "0.lora_B", "4.lora_A", "4.lora_B"]
    assert set(lora_state_dict(model)) == set(with_grad)
    assert list(lora_layers(model)) == ["0", "4"]
    # B = 0 at the start: A gets no gradient yet, B does
    assert model[0].lora_A.grad.abs().sum() == 0 and model[0].lora_B.grad.abs().sum() > 0
    remove_lora(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_merge_remove_gives_plain_layers() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Linear(4 * 5 * 5, 2))
    apply_lora(model, ["0", "2"], r=1)
    for layer in lora_layers(model).values():
        _randomise_b(layer)
    x = torch.randn(2, 3, 5, 5)
    y = model(x)
    merge_lora(model)
    torch.testing.assert_close(model(x), y, atol=1e-5, rtol=1e-6)
    unmerge_lora(model)
    remove_lora(model, merge=True)
    assert isinstance(model[0], nn.Conv2d) and isinstance(model[2], nn.Linear)
    torch.testing.assert_close(model(x), y, atol=1e-5, rtol=1e-6)


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match="groups"):
        LoRAConv2d(nn.Conv2d(4, 4, 3, groups=4))
    with pytest.raises(TypeError, match="LoRAConv2d"):
        LoRALinear(nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(2, 2), r=0)
    with pytest.raises(ValueError, match="no layer 'nope'"):
        apply_lora(nn.Sequential(nn.Linear(2, 2)), ["nope"])
    with pytest.raises(ValueError, match="no bias"):
        bitfit(nn.Linear(2, 2, bias=False))


def test_bitfit_trains_biases_and_head_only() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    bitfit(model, head="3")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["0.bias", "1.bias", "3.weight", "3.bias"]


def test_step_memory_counts_grads_state_and_saved_activations() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))
    opt = torch.optim.AdamW(model.parameters())
    mem = step_memory(model, opt, torch.randn(8, 10), torch.zeros(8, dtype=torch.long))
    n_params = 10 * 20 + 20 + 20 * 3 + 3
    assert mem.parameters == mem.gradients == 4 * n_params
    assert mem.optimizer_state == 2 * 4 * n_params  # Adam's two moments
    assert mem.activations >= 4 * 8 * 20  # at least the hidden layer's output, saved for backward
    model[0].requires_grad_(False)  # frozen first layer: no gradient, no state, less saved
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    frozen = step_memory(model, opt, torch.randn(8, 10), torch.zeros(8, dtype=torch.long))
    assert frozen.gradients == 4 * (20 * 3 + 3) and frozen.activations < mem.activations
