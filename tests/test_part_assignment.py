"""The part-assignment loss for unsupervised keypoints, and the warping generator learning from it that the head moves
and the body and background stay."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.vocabulary import HEAD_REGIONS, KEYPOINT_NAMES, PARAMETER_INDEX, REGIONS, default_parameters
from datamodules.puppet import PuppetIdentity, render_puppet
from modules.backbones import ExpressionPoseGenerator, WarpingGenerator
from modules.backbones.part_assignment import STILL_REGIONS, part_assignment_loss
from modules.descriptors import KeypointDescriptor, Motion
from modules.losses import region_mask

SIZE = 64


def test_unnamed_keypoints_are_told_only_that_the_head_moves_and_the_rest_stays():
    regions = torch.full((1, 8, 8), REGIONS.index("face"), dtype=torch.long)
    regions[:, :2] = REGIONS.index("background")
    driving = regions.clone()
    driving[:, 2, :4] = REGIONS.index("background")  # the head moved off these: they must not stay (hair would stay there)
    motions = 5
    weights = torch.full((1, motions, 8, 8), 1e-8)
    weights[:, 0, :2] = 1.0
    weights[:, 3, 2:] = 1.0  # any keypoint will do for the head
    assert part_assignment_loss(weights, regions, driving).item() == pytest.approx(0.0, abs=1e-6)
    staying = weights.clone()
    staying[:, :, 2, :4] = 1e-8
    staying[:, 0, 2, :4] = 1.0
    clamped = -math.log(1e-6)  # the smallest share the loss counts
    assert part_assignment_loss(staying, regions, driving).item() == pytest.approx(4 * clamped / 64, rel=1e-4), "uncovered pixels that keep the identity are penalised"
    uniform = torch.full((1, motions, 8, 8), 1.0 / motions)
    expected = -(16 * math.log(1 / motions) + 48 * math.log(4 / motions)) / 64
    assert part_assignment_loss(uniform, regions, driving).item() == pytest.approx(expected, rel=1e-4)


def _puppet_pairs() -> dict[str, torch.Tensor]:
    def pose(**values: float) -> np.ndarray:
        params = default_parameters()
        for name, value in values.items():
            params[PARAMETER_INDEX[name]] = value
        return params

    frames = [(render_puppet(PuppetIdentity.from_seed(seed), pose(), SIZE), render_puppet(PuppetIdentity.from_seed(seed), pose(ParamAngleX=a, ParamAngleZ=z), SIZE))
              for seed, a, z in ((1, 25.0, 8.0), (2, -25.0, -8.0))]
    image = lambda f: torch.from_numpy(f.image).permute(2, 0, 1).float() / 255  # noqa: E731
    points = lambda f: torch.from_numpy(f.keypoints).float() / (SIZE - 1) * 2 - 1  # noqa: E731
    stack = lambda fn, i: torch.stack([fn(pair[i]) for pair in frames])  # noqa: E731
    return {"source": stack(image, 0), "driving": stack(image, 1),
            "source_regions": stack(lambda f: torch.from_numpy(f.regions).long(), 0), "driving_regions": stack(lambda f: torch.from_numpy(f.regions).long(), 1),
            "source_keypoints": stack(points, 0), "driving_keypoints": stack(points, 1)}


def test_the_warping_generator_learns_to_keep_body_and_background_still():
    torch.manual_seed(0)
    batch = _puppet_pairs()
    spec = KeypointDescriptor(num_keypoints=len(KEYPOINT_NAMES)).spec  # unnamed: the puppet's points stand in for a detector's
    net = WarpingGenerator(spec, width=8, motion_width=16, motion_scale=0.5, part_weight=1.0)
    m_src, m_drv = (Motion(batch[k].flatten(1), keypoints=batch[k]) for k in ("source_keypoints", "driving_keypoints"))
    side = SIZE // 2
    still = F.adaptive_avg_pool2d(region_mask(batch["source_regions"], STILL_REGIONS) * region_mask(batch["driving_regions"], STILL_REGIONS), side).gt(0.99)
    head = F.adaptive_avg_pool2d(region_mask(batch["driving_regions"], HEAD_REGIONS), side).gt(0.99)

    def identity_share() -> tuple[float, float]:
        weights = net.generate(batch["source"], m_src, m_drv).maps["motion_weights"][:, :1].detach()
        return weights[still].mean().item(), weights[head].mean().item()

    before = identity_share()
    optimizer = torch.optim.Adam(net.dense_motion.parameters(), lr=1e-2)
    for _ in range(60):
        loss = net.auxiliary_losses(net.generate(batch["source"], m_src, m_drv), batch)["parts"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    on_still, on_head = identity_share()
    assert on_still > 0.9 and on_head < 0.1, f"identity share on still pixels {before[0]:.2f} → {on_still:.2f}, on the head {before[1]:.2f} → {on_head:.2f}"


def test_the_part_loss_is_asked_for_and_refused_clearly():
    spec = KeypointDescriptor(num_keypoints=10).spec
    batch = _puppet_pairs()
    motion = Motion(batch["source_keypoints"][:, :10].flatten(1), keypoints=batch["source_keypoints"][:, :10])
    net = WarpingGenerator(spec, width=8, motion_width=8, part_weight=0.5)
    generated = net.generate(batch["source"], motion, motion)
    assert torch.equal(generated.prediction, net(batch["source"], motion, motion))
    assert net.auxiliary_losses(generated, {"source": batch["source"]}) == {}, "no region maps: no term"
    assert WarpingGenerator(spec, width=8, motion_width=8).auxiliary_losses(generated, batch) == {}, "off by default"
    expected = 0.5 * part_assignment_loss(generated.maps["motion_weights"], batch["source_regions"], batch["driving_regions"])
    assert net.auxiliary_losses(generated, batch)["parts"].item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="part_weight"):
        WarpingGenerator(spec, part_weight=-1.0)
    with pytest.raises(ValueError, match="points_per_spline"):
        WarpingGenerator(KeypointDescriptor(num_keypoints=10, jacobians=False).spec, points_per_spline=5, part_weight=0.1)


def test_the_expression_pose_generator_takes_the_part_loss_with_unsupervised_keypoints_too():
    batch = _puppet_pairs()
    descriptor = KeypointDescriptor(num_keypoints=len(KEYPOINT_NAMES))  # unnamed keypoints
    net = ExpressionPoseGenerator(descriptor.spec, width=8, depth=2, motion_scale=0.5, part_weight=0.5)
    m_src, m_drv = (descriptor.motion_from_vector(batch[k].flatten(1)) for k in ("source_keypoints", "driving_keypoints"))
    generated = net.generate(batch["source"], m_src, m_drv)
    expected = 0.5 * part_assignment_loss(generated.maps["motion_weights"], batch["source_regions"], batch["driving_regions"])
    assert net.auxiliary_losses(generated, batch)["parts"].item() == pytest.approx(expected.item(), rel=1e-6)
