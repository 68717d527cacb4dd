"""Tests for transferlab.training, checked against a plain PyTorch loop."""

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlab.training import History, evaluate, fit, predict, train_one_epoch


def blobs(n: int = 96, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 4, generator=g) * 0.5 + torch.nn.functional.one_hot(y, 4).float() * 2
    return TensorDataset(x, y)


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_train_one_epoch_matches_a_plain_pytorch_loop():
    data = blobs()
    a, b = make_model(), make_model()
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    loss, acc = train_one_epoch(a, DataLoader(data, batch_size=32), opt_a)
    b.train()
    losses, correct = [], 0
    for x, y in DataLoader(data, batch_size=32):
        opt_b.zero_grad()
        out = b(x)
        batch_loss = nn.functional.cross_entropy(out, y)
        batch_loss.backward()
        opt_b.step()
        losses.append(batch_loss.item())
        correct += (out.argmax(1) == y).sum().item()
    assert loss == pytest.approx(sum(losses) / len(losses))
    assert acc == pytest.approx(correct / len(data))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_evaluate_uses_eval_mode_no_grad_and_restores_mode():
    data = blobs()
    model = make_model()
    model.train()
    before = copy.deepcopy(model.state_dict())
    loss, acc = evaluate(model, DataLoader(data, batch_size=10))
    assert model.training
    for k, v in model.state_dict().items():  # BN running stats untouched
        assert torch.equal(v, before[k]), k
    model.eval()
    with torch.no_grad():
        out = model(data.tensors[0])
    assert loss == pytest.approx(nn.functional.cross_entropy(out, data.tensors[1]).item(), rel=1e-5)
    assert acc == pytest.approx((out.argmax(1) == data.tensors[1]).float().mean().item())


def test_predict_returns_predictions_and_targets():
    data = blobs(20)
    model = make_model().eval()
    preds, targets = predict(model, DataLoader(data, batch_size=7))
    with torch.no_grad():
        assert torch.equal(preds, model(data.tensors[0]).argmax(1))
    assert torch.equal(targets, data.tensors[1])


def test_fit_records_history_lrs_and_learns():
    torch.manual_seed(0)
    data = blobs()
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    loader = DataLoader(data, batch_size=16, shuffle=True)
    history = fit(model, loader, DataLoader(data, batch_size=64), opt, epochs=5, scheduler=sched, progress=False)
    assert isinstance(history, History) and len(history) == 5
    assert history.epoch == [0, 1, 2, 3, 4]
    assert [row[0] for row in history.lr] == pytest.approx([0.2, 0.2, 0.1, 0.1, 0.05])
    assert history.val_acc[-1] > 0.8
    assert history.train_loss[-1] < history.train_loss[0]


class Scripted(nn.Module):
    """A model whose validation accuracy follows a script: right on epoch 1, wrong otherwise."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        if not self.training:
            self.calls += 1
        good = int(self.calls.item()) == 2  # second evaluation = epoch 1
        logits = torch.zeros(len(x), 2) + self.w
        logits[:, 0 if good else 1] += 1.0
        return logits


def test_fit_keeps_and_restores_the_best_weights():
    data = TensorDataset(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
    model = Scripted()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    history = fit(model, DataLoader(data, batch_size=2), DataLoader(data, batch_size=4), opt, epochs=4, progress=False)
    assert history.best_epoch == 1 and history.val_acc == [0.0, 1.0, 0.0, 0.0]
    assert history.best_state["calls"].item() == 2
    assert model.calls.item() == 2  # restored from the best epoch
    assert history.best_state["w"] is not model.w  # a copy, not a view of the live weights

    model2 = Scripted()
    fit(model2, DataLoader(data, batch_size=2), DataLoader(data, batch_size=4),
        torch.optim.SGD(model2.parameters(), lr=0.1), epochs=4, progress=False, restore_best=False)
    assert model2.calls.item() == 4


def test_fit_progress_bar_writes_to_stderr_only_when_enabled(capsys):
    data = blobs(32)
    for progress in (False, True):
        model = make_model()
        fit(model, DataLoader(data, batch_size=16), None, torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=2, progress=progress)
        err = capsys.readouterr().err
        assert ("epochs" in err) == progress


def test_fit_calls_on_epoch_start_and_rejects_zero_epochs():
    data = blobs(32)
    model = make_model()
    seen = []
    fit(model, DataLoader(data, batch_size=16), None, torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=3, progress=False, start_epoch=2, on_epoch_start=seen.append)
    assert seen == [2, 3, 4]
    with pytest.raises(ValueError, match="epochs"):
        fit(model, DataLoader(data), None, torch.optim.SGD(model.parameters(), lr=0.1), epochs=0)
