"""Tests for transferlab.plots (Agg backend): the right axes, lines, titles and colours."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from sklearn.metrics import confusion_matrix

from transferlab.plots import plot_confusion_matrix, plot_history, plot_lrs, show_predictions
from transferlab.training import History


def history() -> History:
    return History(
        epoch=[0, 1, 2],
        train_loss=[1.0, 0.5, 0.3],
        train_acc=[0.5, 0.7, 0.9],
        val_loss=[1.1, 0.8, 0.9],
        val_acc=[0.4, 0.6, 0.55],
        lr=[[0.1], [0.1, 0.01], [0.05, 0.005]],
        best_epoch=1,
        best_val_acc=0.6,
    )


def test_plot_history_has_loss_and_accuracy_panels():
    fig = plot_history(history(), title="demo")
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_ylabel() == "loss" and acc_ax.get_ylabel() == "accuracy"
    assert [line.get_label() for line in acc_ax.get_lines()] == ["train", "validation", "best epoch"]
    np.testing.assert_allclose(acc_ax.get_lines()[1].get_ydata(), [0.4, 0.6, 0.55])
    plt.close(fig)


def test_plot_lrs_pads_groups_added_later():
    fig = plot_lrs(history(), names=["fc", "layer4"])
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["fc", "layer4"]
    assert np.isnan(lines[1].get_ydata()[0]) and lines[1].get_ydata()[2] == 0.005
    assert fig.axes[0].get_yscale() == "log"
    with pytest.raises(ValueError, match="one name per group"):
        plot_lrs(history(), names=["fc"])
    plt.close("all")


def test_show_predictions_marks_wrong_ones_red():
    images = torch.rand(5, 3, 8, 8)
    fig = show_predictions(images, [0, 1, 1, 1, 2], [0, 1, 2, 1, 0], ["cat", "dog", "fox"], ncols=3)  # targets, preds
    assert len(fig.axes) == 6  # 2 rows x 3 columns, the last one empty
    titles = [ax.title for ax in fig.axes[:5]]
    red = [t.get_color() for t in titles].count("red")
    assert red == 2 and to_rgba(titles[2].get_color()) == to_rgba("red")
    assert titles[2].get_text() == "fox\n(dog)"
    with pytest.raises(ValueError, match="same number"):
        show_predictions(images, [0], [0], ["cat"])
    plt.close("all")


def test_confusion_matrix_matches_sklearn():
    y_true, y_pred = [0, 1, 2, 2, 1, 0], [0, 2, 2, 2, 1, 1]
    fig = plot_confusion_matrix(y_true, y_pred, ["a", "b", "c"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    cm = confusion_matrix(y_true, y_pred)
    shown = np.array([int(t.get_text()) for t in ax.texts]).reshape(3, 3)
    assert np.array_equal(shown, cm)
    plt.close(fig)
