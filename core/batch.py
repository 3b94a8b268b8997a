"""The batch every DataModule yields and every model reads, documented once.

A batch is a dict of tensors, ``B`` items. Images are ``B×3×H×W`` float in ``[0, 1]``, RGB, composited over the
data's background. Parameters are ``B×P`` raw standard parameters in :data:`core.vocabulary.PARAMETER_NAMES`
order (not normalised). Region maps are ``B×H×W`` int64 indices into :data:`core.vocabulary.REGIONS`; keypoints
are ``B×K×2`` pixels at the image size in :data:`core.vocabulary.KEYPOINT_NAMES` order (x right, y down).

Which keys are present depends on the data: the puppet has all of them; rendered Live2D clips have regions and
keypoints where every clip of the split has ground truth; imported footage has parameters of NaN with
``driving_param_mask`` all false. Evaluation protocols (:mod:`datamodules.protocols`) yield
:class:`EvaluationBatch` instead.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from torch import Tensor

PairMode = Literal["self", "cross"]
"""How a pair is made. ``self``: portrait and driving frame of one character, the driving frame is the target;
``cross``: character A's portrait, character B's frame drives, A rendered in B's pose is the target (only
rendered data has it)."""


class PairBatch(TypedDict, total=False):
    """A training, validation or test batch of (portrait, driving frame) pairs.

    Keys:
        source: ``B×3×H×W`` the portrait.
        driving: ``B×3×H×W`` the driving frame.
        target: ``B×3×H×W`` what the animator should output (see :data:`PairMode`).
        source_params: ``B×P`` the portrait's parameters.
        driving_params: ``B×P`` the driving frame's parameters (= the target's).
        driving_param_mask: ``B×P`` bool: the driver's character has that parameter and its value is known.
        identity: ``B`` int64 the portrait's character.
        driving_identity: ``B`` int64 the driver's character.
        source_regions: ``B×H×W`` int64 region map of the portrait.
        driving_regions: ``B×H×W`` int64 region map of the driving frame.
        source_keypoints: ``B×K×2`` keypoints of the portrait.
        driving_keypoints: ``B×K×2`` keypoints of the driving frame.
    """

    source: Tensor
    driving: Tensor
    target: Tensor
    source_params: Tensor
    driving_params: Tensor
    driving_param_mask: Tensor
    identity: Tensor
    driving_identity: Tensor
    source_regions: Tensor
    driving_regions: Tensor
    source_keypoints: Tensor
    driving_keypoints: Tensor


class EvaluationBatch(TypedDict, total=False):
    """A batch of an evaluation protocol's items (:mod:`datamodules.protocols`), shapes as in :class:`PairBatch`.

    Keys:
        source, driving, target, source_params, driving_params, identity, driving_identity: as in
            :class:`PairBatch` (``driving_params`` are the target's parameters).
        driving_first: ``B×3×H×W`` the driver's first frame of its clip (for relative motion transfer).
        sequence: ``B`` int64 which clip pairing the item belongs to.
        frame: ``B`` int64 the frame of that clip.
        target_regions: ``B×H×W`` int64 region map of the target, where the data has it.
        target_keypoints: ``B×K×2`` keypoints of the target, where the data has them.
    """

    source: Tensor
    driving: Tensor
    driving_first: Tensor
    target: Tensor
    source_params: Tensor
    driving_params: Tensor
    identity: Tensor
    driving_identity: Tensor
    sequence: Tensor
    frame: Tensor
    target_regions: Tensor
    target_keypoints: Tensor
