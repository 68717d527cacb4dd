"""What one training step holds in memory, counted tensor by tensor (device-independent, repeatable).

On a GPU, ``torch.cuda.max_memory_allocated`` gives the peak directly. On a CPU PyTorch keeps no resettable peak,
``tracemalloc`` sees only Python's own heap (not tensor storage) and the process RSS is a noisy high-water mark of
everything the process ever did. So :func:`step_memory` counts what a step must keep: the activations autograd saves
for the backward pass (found with ``torch.autograd.graph.saved_tensors_hooks``, each storage counted once), the
gradients and the optimizer's state. Parameters and the batch are the same for every method and are reported apart.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["StepMemory", "step_memory"]


class StepMemory(NamedTuple):
    """Bytes held by one training step: saved activations, gradients, optimizer state, and the parameters."""

    activations: int
    gradients: int
    optimizer_state: int
    parameters: int

    @property
    def training(self) -> int:
        """What training adds on top of the model: activations + gradients + optimizer state."""
        return self.activations + self.gradients + self.optimizer_state


def _nbytes(t: Tensor) -> int:
    return t.untyped_storage().nbytes()


def step_memory(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: nn.Module | None = None,
) -> StepMemory:
    """Run one optimizer step on ``(inputs, targets)`` and count the bytes it held (see the module docstring).

    Example:
        >>> model = nn.Linear(4, 2)
        >>> opt = torch.optim.AdamW(model.parameters())
        >>> step_memory(model, opt, torch.randn(8, 4), torch.zeros(8, dtype=torch.long)).gradients  # 10 floats
        40
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        saved[t.untyped_storage().data_ptr()] = _nbytes(t)  # a storage saved by two ops is counted once
        return t

    model.train()
    model.zero_grad(set_to_none=True)  # also gradients left on parameters the optimizer does not hold
    optimizer.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    params = list(model.parameters())
    grads = sum(_nbytes(p.grad) for p in params if p.grad is not None)
    state = sum(
        _nbytes(v) for s in optimizer.state.values() for v in s.values() if isinstance(v, Tensor) and v.dim() > 0
    )  # not the 0-d step counters
    return StepMemory(sum(saved.values()), grads, state, sum(_nbytes(p) for p in params))
