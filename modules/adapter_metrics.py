"""How well the landmark adapter (:class:`modules.adapter.LandmarkAdapter`) predicts, per route and split.

Over the sequences (clips or videos) of one route and split, with predictions and targets standardised by the
training targets (``N×D`` each, concatenated over sequences):

* ``r2``: R² of the predicted descriptor vectors, summed over the descriptor's own units; ``r2_rel`` the same with
  each sequence's own mean removed (what relative driving sees);
* human videos only: ``r_<Param>``, the correlation of the parameters the adapter implies (its output through the
  descriptor → parameters map of :class:`~modules.adapter_losses.CycleMaps`) with the geometric reading of the
  face; ``ceiling_<Param>``, the same map on the targets themselves; ``jitter_ratio``, the frame-to-frame change of
  the output over that of the targets.
"""

from __future__ import annotations

import torch
from torch import Tensor

from core.vocabulary import PARAMETER_INDEX
from modules.adapter_losses import CycleMaps

COMPARED = ("ParamAngleX", "ParamAngleY", "ParamAngleZ", "ParamEyeLOpen", "ParamEyeROpen", "ParamMouthOpenY")
"""The parameters whose implied trajectory is compared with the geometric reading of a human face."""


def correlation(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two ``N`` series; NaN where either is constant."""
    if a.std() < 1e-6 or b.std() < 1e-6:
        return float("nan")
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def explained_variance(predicted: Tensor, target: Tensor, std: Tensor) -> float:
    """R² of standardised predictions ``N×D`` of ``target``, in the descriptor's own units (``std``: ``D``)."""
    return float(1 - ((predicted - target) ** 2 * std**2).sum() / ((target - target.mean(0)) ** 2 * std**2).sum())


def adapter_metrics(runs: list[tuple[Tensor, Tensor, Tensor]], std: Tensor, maps: CycleMaps, human: bool) -> dict[str, float]:
    """The measures above for ``runs``: one ``(predicted, target, parameters)`` per sequence — standardised
    vectors ``N×D`` twice and normalised parameters ``N×P`` (``[0, 1]``); ``std`` the descriptor's spread per entry.
    Empty runs are left out; no frames at all gives ``{}``."""
    runs = [run for run in runs if len(run[0])]
    if not runs:
        return {}
    predicted, target, parameters = (torch.cat(column) for column in zip(*runs))
    relative = [(a - a.mean(0), b - b.mean(0)) for a, b, _ in runs]
    row = {"frames": float(len(target)), "r2": explained_variance(predicted, target, std),
           "r2_rel": explained_variance(*(torch.cat(column) for column in zip(*relative)), std)}
    if not human:
        return row
    implied, ceiling = maps.parameters(predicted), maps.parameters(target)
    for name in COMPARED:
        i, short = PARAMETER_INDEX[name], name.removeprefix("Param")
        row[f"r_{short}"] = correlation(implied[:, i], parameters[:, i])
        row[f"ceiling_{short}"] = correlation(ceiling[:, i], parameters[:, i])
    moves = [(a.diff(dim=0).norm(dim=1), b.diff(dim=0).norm(dim=1)) for a, b, _ in runs if len(a) > 1]
    if moves:
        row["jitter_ratio"] = float(torch.cat([a for a, _ in moves]).mean() / torch.cat([b for _, b in moves]).mean())
    return row
