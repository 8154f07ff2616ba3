"""Each loss against its reference formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from lightning_modules import losses

torch.manual_seed(0)
LOGITS = torch.randn(16, 4, requires_grad=True)
LABELS = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 0, 1, 1, 2, 2, 3, 0])


def test_cross_entropy_matches_torch_with_smoothing_and_weights():
    weights = [1.0, 2.0, 0.5, 1.5]
    loss = losses.CrossEntropy(n_classes=4, label_smoothing=0.1, class_weights=weights)
    expected = F.cross_entropy(LOGITS, LABELS, weight=torch.tensor(weights), label_smoothing=0.1)
    torch.testing.assert_close(loss(LOGITS, LABELS), expected)


def test_cross_entropy_balanced_weights_are_inverse_frequency():
    loss = losses.CrossEntropy(n_classes=2, class_weights="balanced", class_counts=[30, 10])
    torch.testing.assert_close(loss.weight, torch.tensor([40 / 60, 40 / 20]))


def test_mse_regression_matches_torch():
    out, y = torch.randn(8, 1), torch.randn(8)
    torch.testing.assert_close(losses.MSE(task="regression")(out, y), F.mse_loss(out.squeeze(1), y))


def test_mse_classification_is_softmax_against_one_hot():
    expected = ((LOGITS.softmax(1) - F.one_hot(LABELS, 4).float()) ** 2).mean()
    torch.testing.assert_close(losses.MSE(task="classification", n_classes=4)(LOGITS, LABELS), expected)


def test_log_loss_matches_bce_with_logits():
    out, y = torch.randn(10, 1), torch.randint(0, 2, (10,))
    expected = F.binary_cross_entropy_with_logits(out.squeeze(1), y.float())
    torch.testing.assert_close(losses.LogLoss(n_classes=2)(out, y), expected)


def test_huber_matches_torch():
    out, y = torch.randn(8, 1) * 3, torch.randn(8)
    expected = F.huber_loss(out.squeeze(1), y, delta=0.5)
    torch.testing.assert_close(losses.Huber(task="regression", delta=0.5)(out, y), expected)


@pytest.mark.parametrize("average", ["macro", "binary"])
def test_soft_f1_equals_hand_f1_on_confident_predictions(average):
    n_classes = 2 if average == "binary" else 4
    labels = LABELS % n_classes
    pred = torch.tensor([0, 1, 1, 3, 0, 2, 2, 3, 1, 0, 1, 1, 2, 0, 3, 0]) % n_classes
    logits = F.one_hot(pred, n_classes).float() * 100.0  # softmax is one-hot: soft F1 = hard F1
    loss = losses.SoftF1(n_classes=n_classes, average=average)(logits, labels)
    sk_average = "binary" if average == "binary" else "macro"
    expected = f1_score(
        labels.numpy(),
        pred.numpy(),
        average=sk_average,
        labels=list(range(n_classes)) if average == "macro" else None,
        zero_division=0,
    )
    assert loss.item() == pytest.approx(1 - expected, abs=1e-5)


def test_soft_f1_matches_hand_formula_and_has_finite_gradient():
    probs = LOGITS.softmax(1)
    onehot = F.one_hot(LABELS, 4).float()
    tp, fp, fn = (probs * onehot).sum(0), (probs * (1 - onehot)).sum(0), ((1 - probs) * onehot).sum(0)
    hand = 1 - (2 * tp / (2 * tp + fp + fn)).mean()
    loss = losses.SoftF1(n_classes=4)(LOGITS, LABELS)
    torch.testing.assert_close(loss, hand)
    loss.backward()
    assert LOGITS.grad is not None and torch.isfinite(LOGITS.grad).all()
    LOGITS.grad = None


def test_soft_f1_gradient_finite_when_a_class_is_absent():
    logits = torch.randn(4, 3, requires_grad=True)
    losses.SoftF1(n_classes=3)(logits, torch.tensor([0, 0, 1, 1])).backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda: losses.LogLoss(task="classification", n_classes=10),
        lambda: losses.SoftF1(task="regression"),
        lambda: losses.CrossEntropy(task="regression"),
        lambda: losses.SoftF1(n_classes=3, average="binary"),
    ],
)
def test_loss_refuses_a_task_it_does_not_fit(make):
    with pytest.raises(losses.IncompatibleTask):
        make()
