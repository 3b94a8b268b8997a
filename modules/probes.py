"""Linear probes that say what a descriptor vector carries: a ridge regression to the rig parameters (motion
content, higher R² is better) and a linear classifier of the character (identity leakage, lower is better)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy
from torchmetrics.functional.regression import r2_score

RIDGE_ALPHAS = tuple(10.0 ** e for e in range(-2, 7))
CV_FOLDS = 4


def _standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def ridge_fit(x: Tensor, y: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Ridge regression ``y ≈ x·W + b`` (``x`` ``N×D``, ``y`` ``N×P``); solved in the primal or the dual form,
    whichever is smaller. Returns ``W`` ``D×P`` and ``b`` ``P``."""
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    n, d = xc.shape
    if d <= n:
        weights = torch.linalg.solve(xc.T @ xc + alpha * torch.eye(d, dtype=x.dtype), xc.T @ yc)
    else:
        weights = xc.T @ torch.linalg.solve(xc @ xc.T + alpha * torch.eye(n, dtype=x.dtype), yc)
    return weights, y_mean - x_mean @ weights


def centre_by_group(x: Tensor, groups: Tensor) -> Tensor:
    """``x`` minus the mean of its group's rows (each character's descriptor offset removed; uses no labels)."""
    labels = torch.unique(groups, return_inverse=True)[1]
    sums = torch.zeros(int(labels.max()) + 1, x.shape[1], dtype=x.dtype).index_add_(0, labels, x)
    counts = torch.bincount(labels).to(x.dtype)[:, None]
    return x - (sums / counts)[labels]


def ridge_probe(train_x: Tensor, train_y: Tensor, train_groups: Tensor, test_x: Tensor, test_y: Tensor) -> tuple[Tensor, float]:
    """R² per output of a ridge probe fit on ``train`` and scored on ``test`` (other characters).

    Features are standardised on the training set. The ridge strength is picked from :data:`RIDGE_ALPHAS` by
    cross-validation over characters (``train_groups`` split into :data:`CV_FOLDS` folds), so it is the one that
    transfers to unseen characters best.

    Args:
        train_x, test_x: ``N×D`` descriptor vectors.
        train_y, test_y: ``N×P`` targets (rows with NaN are dropped).
        train_groups: ``N`` character labels of the training rows.

    Returns:
        ``P`` R² values (NaN where the test target is constant) and the chosen alpha.
    """
    keep_train, keep_test = ~train_y.isnan().any(1), ~test_y.isnan().any(1)
    train_x, train_y, test_x, test_y = train_x[keep_train].double(), train_y[keep_train].double(), test_x[keep_test].double(), test_y[keep_test].double()
    train_x, test_x = _standardise(train_x, test_x)
    fold = torch.unique(train_groups[keep_train], return_inverse=True)[1] % CV_FOLDS
    folds = [k for k in range(CV_FOLDS) if (fold == k).any() and (fold != k).any()]

    def validation_error(alpha: float) -> float:
        errors = []
        for k in folds:
            w, b = ridge_fit(train_x[fold != k], train_y[fold != k], alpha)
            errors.append(float(((train_x[fold == k] @ w + b - train_y[fold == k]) ** 2).mean()))
        return sum(errors) / max(1, len(errors))

    alpha = min(RIDGE_ALPHAS, key=validation_error)
    weights, bias = ridge_fit(train_x, train_y, alpha)
    predicted = test_x @ weights + bias
    constant = test_y.std(0) < 1e-8
    r2 = r2_score(predicted, test_y, multioutput="raw_values").float()
    return torch.where(constant, torch.full_like(r2, float("nan")), r2), alpha


def identity_leakage(x: Tensor, identities: Tensor, steps: int = 200, weight_decay: float = 1e-3) -> tuple[float, float]:
    """Accuracy of a linear (softmax) classifier of the character from descriptor vectors.

    The frames are split alternately into a fitting half and a scoring half (every character appears in both
    when it has two or more frames).

    Args:
        x: ``N×D`` descriptor vectors.
        identities: ``N`` character labels (any integers).

    Returns:
        Accuracy on the scoring half, and chance level (the most common character's share there).
    """
    labels = torch.unique(identities, return_inverse=True)[1]
    classes = int(labels.max()) + 1
    fit_x, score_x = _standardise(x[0::2].float(), x[1::2].float())
    fit_y, score_y = labels[0::2], labels[1::2]
    classifier = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.LBFGS(classifier.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(classifier(fit_x), fit_y) + weight_decay * classifier.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        accuracy = multiclass_accuracy(classifier(score_x).argmax(1), score_y, num_classes=classes, average="micro")
    chance = torch.bincount(score_y, minlength=classes).max().item() / len(score_y)
    return float(accuracy), chance
