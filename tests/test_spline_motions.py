"""TPSMM's sparse motions for the warping generator: the regularised thin-plate-spline fit, one spline per keypoint
group, and the generator moving pixels with them."""

import pytest
import torch
from kornia.geometry.transform import warp_points_tps

from modules.backbones import WarpingGenerator
from modules.backbones.warping import fit_thin_plate_spline, spline_motions
from modules.descriptors import KeypointDescriptor, Motion


def spline(controls: torch.Tensor, targets: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    kernel, affine = fit_thin_plate_spline(controls, targets)
    return warp_points_tps(points, controls, kernel, affine)


def test_spline_passes_through_its_points_and_keeps_affine_maps_affine():
    torch.manual_seed(0)
    controls = torch.rand(4, 5, 2) * 2 - 1
    targets = controls + 0.1 * torch.randn_like(controls)
    assert (spline(controls, targets, controls) - targets).abs().max() < 2e-3, "through its points, within the smoothing"
    matrix, shift = torch.eye(2) + 0.2 * torch.randn(4, 2, 2), 0.1 * torch.randn(4, 1, 2)
    points = torch.rand(4, 100, 2) * 2 - 1
    affine = spline(controls, controls @ matrix.transpose(1, 2) + shift, points)
    assert torch.allclose(affine, points @ matrix.transpose(1, 2) + shift, atol=1e-4), "an affine motion everywhere, not only at the points"


def test_degenerate_keypoints_give_a_finite_translation_and_gradients():
    points = torch.rand(2, 50, 2) * 2 - 1
    together = torch.full((2, 5, 2), 0.3, requires_grad=True)  # an untrained detector's collapsed keypoints
    moved = spline(together, together.detach() + torch.tensor([0.1, -0.2]), points)
    moved.sum().backward()
    assert torch.isfinite(moved).all() and torch.isfinite(together.grad).all()
    assert torch.allclose(moved - points, torch.tensor([0.1, -0.2]).expand_as(points), atol=0.02)
    line = torch.stack([torch.linspace(-1, 1, 5), torch.zeros(5)], -1)[None]
    assert torch.allclose(spline(line, line + 0.1, points[:1]) - points[:1], torch.full_like(points[:1], 0.1), atol=0.02)


def test_one_motion_per_group_that_follows_only_its_own_keypoints():
    torch.manual_seed(0)
    grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="xy"), -1)
    driving = torch.rand(2, 6, 2) * 1.6 - 0.8
    source = driving.clone()
    source[:, 3:] += torch.tensor([0.2, 0.1])  # the second group moves, the first stays
    flows = spline_motions(grid, Motion(torch.zeros(2, 1), keypoints=source), Motion(torch.zeros(2, 1), keypoints=driving), 3)
    assert flows.shape == (2, 3, 8, 8, 2)
    assert torch.equal(flows[:, 0], grid.expand(2, 8, 8, 2)), "the identity (background) comes first"
    assert torch.allclose(flows[:, 1], grid.expand(2, 8, 8, 2), atol=1e-4)
    assert torch.allclose(flows[:, 2], (grid + torch.tensor([0.2, 0.1])).expand(2, 8, 8, 2), atol=1e-4)


def test_generator_with_splines_moves_the_image_and_names_what_it_needs():
    torch.manual_seed(0)
    spec = KeypointDescriptor(num_keypoints=6).spec
    net = WarpingGenerator(spec, width=8, motion_width=8, points_per_spline=3)
    source = torch.rand(1, 3, 32, 32)
    keypoints = torch.rand(1, 6, 2) - 0.5
    still = net(source, Motion(torch.zeros(1, 12), keypoints=keypoints), Motion(torch.zeros(1, 12), keypoints=keypoints))
    assert torch.allclose(still, source, atol=1e-4), "equal motions: an untrained generator returns the source"
    with torch.no_grad():  # every location follows the first group's spline rather than the background
        net.dense_motion.mask.weight.zero_()
        net.dense_motion.mask.bias.copy_(torch.tensor([-20.0, 0.0, -20.0]))
    shift = torch.tensor([4 * 2 / 31, 0.0])  # 4 pixels right (align_corners=True)
    moved = net(source, Motion(torch.zeros(1, 12), keypoints=keypoints), Motion(torch.zeros(1, 12), keypoints=keypoints + shift))
    assert torch.allclose(moved[..., 8:24, 12:28], source[..., 8:24, 8:24], atol=1e-3), "keypoints moved 4 px right: so does the image"
    with pytest.raises(ValueError, match="jacobians: false"):
        WarpingGenerator(KeypointDescriptor(num_keypoints=6, jacobians=True).spec, points_per_spline=3)
    with pytest.raises(ValueError, match="divide the descriptor's 6"):
        WarpingGenerator(spec, points_per_spline=4)
