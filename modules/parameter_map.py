"""``ParameterAffineMap``: the registration windows' affines that a change of the rig parameters makes, as the training
characters make it on average — the driver's change put on the portrait in *parameter* units, not in the driver's
pixels.

Why: relative cross-identity transfer registers the driver's change on the driver (ECC, :mod:`modules.registration`),
so a head turn arrives as far as the *driver's* rig turns its head; characters differ by a factor of ten there (the
least-squares gain from one character's rigid change to another's, README, Quality). A parameter change (read from
the driver by a reader that learned the standard parameters) says how far the head turned whoever turned it; this
map says how far that moves an average character's pixels. Neither knows the portrait's own rig, but their errors
differ: measured on held-out characters with no network (the portrait warped by the affine alone, ``benchmarks/
QUALITY.md``), the driver's ECC change is 18 % under the no-motion floor, the map of the true parameter change 25 %,
the portrait's own affine to the target (an oracle) 36 %.

Convention (as :mod:`modules.registration`): an affine ``A`` ``2×3`` in normalised coordinates maps points of the
driven frame to the reference; its *departure* is ``A − [I | 0]``. The map is linear without intercept (no change,
no motion)::

    departure (B×W·6) = change (B×P) · M (P×W·6)

fitted by ridge regression, ``M = (ΔᵀΔ + λ·n·I)⁻¹ ΔᵀD``, over every pair :meth:`ParameterAffineMap.observe` saw. The
sums ``ΔᵀΔ``, ``ΔᵀD`` and ``n`` are buffers: saved in checkpoints, resumed, identical on every process under DDP
(each batch's sums are all-reduced), and the solve of a ``P×P`` system costs nothing beside a network.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


def ridge_map(gram: Tensor, moment: Tensor, count: Tensor | float, ridge: float) -> Tensor:
    """The ridge-regression solution ``(gram + ridge·count·I)⁻¹ moment``.

    Args:
        gram: ``P×P`` sum of ``xᵀx`` over the observations.
        moment: ``P×O`` sum of ``xᵀy``.
        count: the number of observations (the ridge grows with it, so it stays a fixed share of the data's).
        ridge: the penalty per observation, ``> 0``.

    Returns:
        ``M`` ``P×O`` in ``gram``'s dtype, minimising ``Σ|x·M − y|² + ridge·count·|M|²``.
    """
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + ridge * float(count) * eye, moment)


class ParameterAffineMap(nn.Module):
    """Per registration window, the affine of a rig-parameter change (module docstring), fitted while training.

    Args:
        num_parameters: ``P``, the length of a parameter change (normalised parameters,
            :func:`~modules.descriptors.rig.normalise_rig_parameters`).
        num_windows: ``W``, the registration windows.
        ridge: the ridge penalty per observation (normalised parameters and coordinates; 1e-3 shrinks a map fitted
            on a few hundred pairs by well under 1 %).
        min_observations: below this many pairs the map answers "no motion" (a departure of 0) rather than a fit
            to too few.
    """

    def __init__(self, num_parameters: int, num_windows: int, ridge: float = 1e-3, min_observations: int = 64) -> None:
        super().__init__()
        if num_parameters < 1 or num_windows < 1:
            raise ValueError(f"num_parameters and num_windows must be positive, got {num_parameters} and {num_windows}")
        if ridge <= 0 or min_observations < 1:
            raise ValueError(f"ridge must be positive and min_observations at least 1, got {ridge} and {min_observations}")
        self.num_windows, self.ridge, self.min_observations = num_windows, ridge, min_observations
        self.register_buffer("gram", torch.zeros(num_parameters, num_parameters, dtype=torch.float64))
        self.register_buffer("moment", torch.zeros(num_parameters, num_windows * 6, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @property
    def fitted(self) -> bool:
        """Whether enough pairs were observed for :meth:`forward` to answer with the fit."""
        return float(self.count) >= self.min_observations

    @torch.no_grad()
    def observe(self, change: Tensor, affines: Tensor) -> None:
        """Add pairs to the fit.

        Args:
            change: ``B×P`` normalised parameter change from the reference to the driven frame (unknown entries 0).
            affines: ``B×W×2×3`` the registration of the driven frame with the reference, one per window, the
                character's own motion (a self pair); leave out pairs whose registration failed.
        """
        if change.shape[0] != affines.shape[0] or affines.shape[1:] != (self.num_windows, 2, 3):
            raise ValueError(f"expected change B×{self.gram.shape[0]} and affines B×{self.num_windows}×2×3, got "
                             f"{tuple(change.shape)} and {tuple(affines.shape)}")
        eye = torch.eye(2, 3, dtype=torch.float64, device=affines.device)
        x = change.detach().to(self.gram)
        y = (affines.detach().to(self.gram) - eye).flatten(1)
        sums = torch.cat([(x.T @ x).flatten(), (x.T @ y).flatten(), x.new_tensor([float(len(x))])])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
        parameters = self.gram.shape[0]
        self.gram += sums[: parameters * parameters].view_as(self.gram)
        self.moment += sums[parameters * parameters : -1].view_as(self.moment)
        self.count += sums[-1]

    def forward(self, change: Tensor) -> Tensor:
        """The affines ``B×W×2×3`` (change's dtype) that ``change`` ``B×P`` makes; the identity until :attr:`fitted`."""
        eye = torch.eye(2, 3, dtype=change.dtype, device=change.device).expand(change.shape[0], self.num_windows, 2, 3)
        if not self.fitted:
            return eye.clone()
        weights = ridge_map(self.gram, self.moment, self.count, self.ridge).to(change.dtype)
        return eye + (change @ weights).view(-1, self.num_windows, 2, 3)
