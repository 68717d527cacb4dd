"""Tests for transferlab.training, checked against a plain PyTorch loop."""

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlab.training import (
    History,
    OneCycleRecipe,
    evaluate,
    fit,
    predict,
    train_one_cycle,
    train_one_epoch,
    train_recipe,
    train_steps,
)


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
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
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
    assert not shares_storage(history.best_state, model)  # a copy, not a view of the live weights

    model2 = Scripted()
    history2 = fit(
        model2,
        DataLoader(data, batch_size=2),
        DataLoader(data, batch_size=4),
        torch.optim.SGD(model2.parameters(), lr=0.1),
        epochs=4,
        progress=False,
        restore_best=False,
    )
    assert model2.calls.item() == 4
    assert history2.best_state["calls"].item() == 2  # later epochs did not reach into the kept copy


def shares_storage(state: dict[str, torch.Tensor], model: nn.Module) -> bool:
    """True if any tensor of ``state`` lives in the same memory as the model's own tensor of that name."""
    live = model.state_dict()
    return any(t.untyped_storage().data_ptr() == live[k].untyped_storage().data_ptr() for k, t in state.items())


def test_shares_storage_detects_a_shallow_copy():
    """The check above can fail: a state_dict (or a shallow copy of it) shares the live tensors' memory."""
    model = Scripted()
    assert shares_storage(model.state_dict(), model)
    assert shares_storage(copy.copy(model.state_dict()), model)
    assert not shares_storage(copy.deepcopy(model.state_dict()), model)


def test_fit_progress_bar_writes_to_stderr_only_when_enabled(capsys):
    data = blobs(32)
    for progress in (False, True):
        model = make_model()
        fit(
            model,
            DataLoader(data, batch_size=16),
            None,
            torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=2,
            progress=progress,
        )
        err = capsys.readouterr().err
        assert ("epochs" in err) == progress


def test_fit_calls_on_epoch_start_and_rejects_zero_epochs():
    data = blobs(32)
    model = make_model()
    seen = []
    fit(
        model,
        DataLoader(data, batch_size=16),
        None,
        torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=3,
        progress=False,
        start_epoch=2,
        on_epoch_start=seen.append,
    )
    assert seen == [2, 3, 4]
    with pytest.raises(ValueError, match="epochs"):
        fit(model, DataLoader(data), None, torch.optim.SGD(model.parameters(), lr=0.1), epochs=0)


def plain_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int) -> list[float]:
    """The step-budgeted loop written out: draw a batch with replacement, one AdamW step, one cosine step."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    losses = []
    for _ in range(steps):
        pick = torch.randint(len(y), (16,), generator=g)
        loss = nn.functional.cross_entropy(model(x[pick]), y[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def test_train_steps_matches_a_plain_pytorch_loop():
    x, y = blobs().tensors
    a, b = make_model(), make_model()
    opt = torch.optim.AdamW(a.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 12)
    a.eval()
    losses = train_steps(a, (x, y), 12, opt, batch_size=16, generator=torch.Generator().manual_seed(3), scheduler=sched)
    assert a.training  # train mode: BatchNorm used batch statistics
    assert losses == plain_steps(b, x, y, 12, seed=3)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)  # the scheduler stepped once per step


def test_train_recipe_is_adamw_with_a_cosine_schedule_on_seeded_batches():
    x, y = blobs().tensors
    a, b = make_model(), make_model()
    losses = train_recipe(a, a.parameters(), (x, y), 12, 0.05, seed=3, batch_size=16)
    assert losses == plain_steps(b, x, y, 12, seed=3)  # the recipe written out in plain PyTorch
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    c = make_model()
    assert train_recipe(c, c.parameters(), (x, y), 12, 0.05, seed=4, batch_size=16) != losses  # the seed matters


def test_train_one_cycle_is_adamw_onecycle_and_label_smoothing_written_out():
    x, y = blobs().tensors
    recipe = OneCycleRecipe(lr=0.05, weight_decay=0.01, label_smoothing=0.2, batch_size=16)
    a, b = make_model(), make_model()
    losses = train_one_cycle(a, (x, y), 12, recipe, generator=torch.Generator().manual_seed(3))
    # the same recipe in plain PyTorch
    opt = torch.optim.AdamW(b.parameters(), lr=0.05, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=12)
    g = torch.Generator().manual_seed(3)
    b.train()
    plain = []
    for _ in range(12):
        pick = torch.randint(len(y), (16,), generator=g)
        loss = nn.functional.cross_entropy(b(x[pick]), y[pick], label_smoothing=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        plain.append(loss.item())
    assert losses == plain
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    c = make_model()
    other = train_one_cycle(
        c,
        (x, y),
        12,
        OneCycleRecipe(lr=0.05, label_smoothing=0.0, batch_size=16),
        generator=torch.Generator().manual_seed(3),
    )
    assert other != losses  # label smoothing (and weight decay) change the run


def test_train_one_cycle_trains_only_the_given_params_and_rejects_a_zero_budget():
    x, y = blobs().tensors
    model = make_model()
    first = copy.deepcopy(model[0].state_dict())
    train_one_cycle(model, (x, y), 4, params=model[3].parameters(), generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(v, model[0].state_dict()[k]) for k, v in first.items())  # not in params: unchanged
    with pytest.raises(ValueError, match="steps must be at least 1"):
        train_one_cycle(model, (x, y), 0)


def test_predict_on_an_empty_loader_is_a_clear_error():
    with pytest.raises(ValueError, match="yielded no samples"):
        predict(make_model(), [])


def test_train_steps_repeats_with_the_same_seed_and_differs_with_another():
    x, y = blobs().tensors

    def run(seed):
        model = make_model()
        train_steps(
            model,
            (x, y),
            5,
            torch.optim.SGD(model.parameters(), lr=0.1),
            batch_size=8,
            generator=torch.Generator().manual_seed(seed),
        )
        return model[0].weight

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_train_steps_takes_a_batch_source_and_a_transform():
    x, y = blobs().tensors
    asked, logged = [], []

    def source(step):
        asked.append(step)
        return x[step * 8 : step * 8 + 8], y[step * 8 : step * 8 + 8]

    model = make_model()
    reference = make_model()
    losses = train_steps(
        model,
        source,
        4,
        torch.optim.SGD(model.parameters(), lr=0.1),
        transform=lambda t: 2 * t,
        on_step=lambda step, loss: logged.append((step, loss)),
    )
    assert asked == [0, 1, 2, 3] and [s for s, _ in logged] == [0, 1, 2, 3]
    assert [loss for _, loss in logged] == losses
    opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    for step in range(4):
        loss = nn.functional.cross_entropy(reference(2 * x[step * 8 : step * 8 + 8]), y[step * 8 : step * 8 + 8])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(model[0].weight, reference[0].weight)


def test_train_steps_rejects_a_zero_budget_and_mismatched_tensors():
    x, y = blobs().tensors
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        train_steps(model, (x, y), 0, opt)
    with pytest.raises(ValueError, match="as many inputs as targets"):
        train_steps(model, (x, y[:-1]), 3, opt)


class _LayoutSpy(nn.Module):
    """Records whether each input arrived in channels-last order; classifies by the mean of the first channel."""

    def __init__(self) -> None:
        super().__init__()
        self.layouts: list[bool] = []
        self.fc = nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.layouts.append(x.is_contiguous(memory_format=torch.channels_last))
        return self.fc(x[:, :1].mean(dim=(2, 3)))


def test_evaluation_loops_feed_channels_last_and_training_loops_do_not():
    x, y = torch.rand(8, 3, 4, 4), torch.arange(8) % 2
    spy = _LayoutSpy()
    evaluate(spy, [(x, y)])
    predict(spy, [(x, y)])
    assert spy.layouts == [True, True]  # transferlab.env.to_device: the faster order for convolutions on a CPU
    spy.layouts.clear()
    train_one_epoch(spy, [(x, y)], torch.optim.SGD(spy.parameters(), lr=0.1))
    train_steps(spy, (x, y), 2, torch.optim.SGD(spy.parameters(), lr=0.1), batch_size=4)
    assert spy.layouts == [False, False, False]  # the hand-written loop of notebook 05, step for step
