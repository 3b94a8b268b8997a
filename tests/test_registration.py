"""Registration (OpenCV's ECC affine) and its keypoint in the animator."""

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from kornia.geometry import create_meshgrid

from conftest import CONFIGS, metric_by_step, run_cli, tiny_args
from core.errors import UserFacingError
from datamodules import PuppetPairs
from modules import AnimatorModule
from modules.backbones import WarpingGenerator
from modules.backbones.warping import sparse_motions
from modules.losses import pyramid_error
from modules.descriptors import KeypointDescriptor, Motion
from modules.registration import affine_keypoint, reference_keypoint, register_affine, warp_affine
import modules.registration as registration_module


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    pairs = PuppetPairs(list(range(4)), length=4, image_size=64, seed=0)
    return torch.stack([pairs[i]["source"] for i in range(4)])


def test_registration_recovers_a_known_affine(frames):
    affine = torch.tensor([[[1.04, 0.06, 0.05], [-0.05, 0.98, -0.04]],
                           [[0.97, -0.03, -0.06], [0.04, 1.03, 0.03]]]).repeat(2, 1, 1)
    moved = warp_affine(frames, affine)
    found, registered = register_affine(frames, moved)
    assert registered.all()
    assert (found - affine).abs().max() < 0.02, f"largest error {(found - affine).abs().max():.4f}"
    identity, _ = register_affine(frames, frames)
    assert (identity - torch.eye(2, 3)).abs().max() < 1e-3


def test_a_window_registers_what_moves_inside_it(frames):
    """The top half of the frame moves one way, the bottom half the other: each window finds its own motion."""
    up = warp_affine(frames, torch.tensor([[1.0, 0.0, 0.06], [0.0, 1.0, 0.0]]).expand(4, 2, 3))
    down = warp_affine(frames, torch.tensor([[1.0, 0.0, -0.06], [0.0, 1.0, 0.0]]).expand(4, 2, 3))
    moved = torch.cat([up[..., :32, :], down[..., 32:, :]], -2)
    top, _ = register_affine(frames, moved, (0.0, -0.5, 0.45))
    bottom, _ = register_affine(frames, moved, (0.0, 0.5, 0.45))
    assert (top[:, 0, 2] - 0.06).abs().max() < 0.02 and (bottom[:, 0, 2] + 0.06).abs().max() < 0.02, (top[:, 0, 2], bottom[:, 0, 2])
    with pytest.raises(ValueError, match="positive half side"):
        register_affine(frames, moved, (0.0, 0.0, 0.0))


def test_a_singular_result_is_refused(frames, monkeypatch):
    """An affine within the departure bound but with no usable inverse (it flattens the frame) counts as a failure."""
    singular = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]], np.float32)
    monkeypatch.setattr(registration_module.cv2, "findTransformECC", lambda *args: (1.0, singular))
    found, registered = register_affine(frames[:1], frames[:1])
    assert not registered.item() and torch.equal(found[0], torch.eye(2, 3))


def test_a_frame_with_nothing_to_register_gives_the_identity_and_says_so(frames):
    blank = torch.full_like(frames[:1], 0.5)
    found, registered = register_affine(blank, blank)
    assert not registered.item()
    assert torch.equal(found[0], torch.eye(2, 3))
    with pytest.raises(ValueError, match="same shape"):
        register_affine(frames[:1], frames[:2])


def test_the_registration_keypoint_moves_pixels_by_the_affine():
    affine = torch.tensor([[[1.1, 0.2, 0.1], [-0.1, 0.9, -0.2]]])
    keypoint, jacobian = affine_keypoint(affine)
    anchor, identity = reference_keypoint(1, "cpu", torch.float32)
    source = Motion(vector=torch.zeros(1, 2), keypoints=anchor, jacobians=identity)
    driving = Motion(vector=torch.zeros(1, 2), keypoints=keypoint, jacobians=jacobian)
    grid = create_meshgrid(16, 16, normalized_coordinates=True)[0]
    flow = sparse_motions(grid, source, driving)[0, 1]  # the keypoint's backward flow (0 is the identity)
    expected = torch.einsum("ij,hwj->hwi", affine[0, :, :2], grid) + affine[0, :, 2]
    assert torch.allclose(flow, expected, atol=1e-5)


def make_animator(registration: bool = True, jacobians: bool = True) -> AnimatorModule:
    torch.manual_seed(0)
    return AnimatorModule(descriptor=KeypointDescriptor(num_keypoints=3, width=8, input_size=64, jacobians=jacobians),
                          backbone=partial(WarpingGenerator, width=8, motion_width=8, refine=False), image_size=64,
                          registration=[[0.0, 0.0, 1.0]] if registration else None)


def test_the_animator_registers_each_driving_frame_with_its_reference(frames):
    animator = make_animator().eval()
    assert animator.backbone.dense_motion.mask.out_channels == 3 + 2  # identity, 3 keypoints, the registration
    shift = torch.tensor([[[1.0, 0.0, 0.08], [0.0, 1.0, 0.0]]]).expand(4, 2, 3)
    driving = warp_affine(frames, shift)
    with torch.no_grad():
        portrait = animator.prepare(frames)
        assert torch.equal(portrait.motion.keypoints[:, -1], torch.zeros(4, 2))
        motion = animator.registered(animator.describe(driving), driving, frames)
        assert torch.allclose(motion.keypoints[:, -1], torch.tensor([-0.08, 0.0]).expand(4, 2), atol=0.01)
        assert animator.registered(motion) is motion  # already registered: unchanged
        assert animator.last_registration_rate == 1.0
        blank = torch.full_like(frames, 0.5)
        animator.registered(animator.describe(blank), blank, blank)
        assert animator.last_registration_rate == 0.0, "frames ECC cannot align are counted"
        absolute = animator.animate_frame(portrait, driving)
        assert torch.allclose(absolute, animator.animate(frames, driving)["absolute"], atol=1e-5)
        relative = animator.animate(frames, driving, frames)["relative"]  # the driver's first frame is the portrait
        assert torch.allclose(relative, absolute, atol=1e-5)
        vector_driven = animator.animate_motion(portrait, animator.motion_from_vector(animator.describe(driving).vector))
        assert vector_driven.shape == frames.shape  # nothing to register: the added keypoint stays still
        with pytest.raises(ValueError, match="reference_frame"):
            animator.animate_frame(portrait, driving, animator.describe(frames))
        assert torch.allclose(animator.animate_frame(portrait, driving, animator.describe(frames), reference_frame=frames), relative, atol=1e-5)


def test_cross_identity_training_pairs_are_animated_as_relative_transfer(frames):
    """A batch with ``driving_first``: its cross-identity pairs are predicted as ``animate``'s relative transfer (the
    driver's change since ``driving_first``, registration included), its self pairs (``driving_first`` = the
    portrait) as before."""
    animator = make_animator().eval()
    shift = torch.tensor([[[1.0, 0.0, 0.06], [0.0, 1.0, 0.02]]]).expand(4, 2, 3)
    driving, first = warp_affine(frames.roll(1, 0), shift), frames.roll(1, 0)
    first = torch.cat([frames[:2], first[2:]])  # items 0, 1: self pairs; 2, 3: another character drives
    driving = torch.cat([warp_affine(frames[:2], shift[:2]), driving[2:]])
    with torch.no_grad():
        _, prediction = animator.compute_losses({"source": frames, "driving": driving, "target": driving, "driving_first": first})
        _, plain = animator.compute_losses({"source": frames, "driving": driving, "target": driving})
        expected = animator.animate(frames, driving, first)
    assert torch.allclose(prediction[:2], plain[:2], atol=1e-5), "self pairs: unchanged"
    assert torch.allclose(prediction.clamp(0, 1)[2:], expected["relative"][2:], atol=1e-5)
    assert (prediction.clamp(0, 1)[2:] - expected["absolute"][2:]).abs().max() > 0.01, "not the absolute transfer"


def test_cross_identity_training_pairs_are_scored_against_their_target(frames):
    """A cross pair's prediction should be the portrait's character in the driver's pose (``target``), never the
    driver's own frame, and the backbone's part loss reads the target's region map (``target_regions``)."""
    pairs = PuppetPairs(list(range(4)), length=4, image_size=64, seed=0)
    regions = torch.stack([pairs[i]["source_regions"] for i in range(4)])
    torch.manual_seed(0)
    animator = AnimatorModule(descriptor=KeypointDescriptor(num_keypoints=3, width=8, input_size=64, jacobians=True),
                              backbone=partial(WarpingGenerator, width=8, motion_width=8, refine=False, part_weight=1.0),
                              image_size=64, registration=[[0.0, 0.0, 1.0]]).eval()
    shift = torch.tensor([[[1.0, 0.0, 0.06], [0.0, 1.0, 0.02]]]).expand(4, 2, 3)
    driving = torch.cat([warp_affine(frames[:2], shift[:2]), frames.roll(1, 0)[2:]])  # 2, 3: another character drives
    first = torch.cat([frames[:2], driving[2:]])
    target = torch.cat([driving[:2], warp_affine(frames[2:], shift[2:])])  # the portrait's character, moved
    driving_regions = torch.cat([regions[:2], regions.roll(1, 0)[2:]])
    target_regions = torch.cat([regions[:2], regions[2:].flip(-1)])
    batch = {"source": frames, "driving": driving, "target": target, "driving_first": first,
             "source_regions": regions, "driving_regions": driving_regions, "target_regions": target_regions}
    terms, prediction = animator.compute_losses(batch)
    expected = pyramid_error(prediction, target, 1, animator.reconstruction_beta)
    assert torch.allclose(terms["reconstruction"], expected)
    assert (pyramid_error(prediction, driving, 1, animator.reconstruction_beta) - expected).abs() > 1e-3, "the driver's frame differs"
    as_target = {**batch, "driving_regions": target_regions}
    del as_target["target_regions"]
    assert torch.allclose(animator.compute_losses(as_target)[0]["backbone/parts"], terms["backbone/parts"])
    without = {k: v for k, v in batch.items() if k != "target_regions"}  # data without it: the driving frame's map
    assert (animator.compute_losses(without)[0]["backbone/parts"] - terms["backbone/parts"]).abs() > 1e-4


def test_the_drivers_change_can_be_registered_as_a_rigid_motion(frames):
    """``registration_transfer: euclidean`` fits rotation and translation between the driver's frames: a stretch of
    the driver is left out of relative transfer, not of absolute transfer or training."""
    stretch = torch.tensor([[[1.12, 0.0, 0.04], [0.0, 0.94, 0.0]]]).expand(4, 2, 3)
    stretched = warp_affine(frames, stretch)
    rigid, registered = register_affine(frames, stretched, motion="euclidean")
    assert registered.all()
    linear = rigid[:, :, :2]
    assert torch.allclose(linear @ linear.transpose(1, 2), torch.eye(2).expand(4, 2, 2), atol=1e-4), "a rotation"
    assert (rigid[:, 0, 2] - 0.04).abs().max() < 0.03
    with pytest.raises(ValueError, match="motion must be one of"):
        register_affine(frames, stretched, motion="homography")
    animator = make_animator()
    animator.registration_transfer = "euclidean"
    with torch.no_grad():
        transferred = animator.registered(animator.describe(stretched), stretched, frames, transfer=True)
        trained = animator.registered(animator.describe(stretched), stretched, frames)
    assert torch.allclose(transferred.jacobians[:, -1] @ transferred.jacobians[:, -1].transpose(1, 2), torch.eye(2).expand(4, 2, 2), atol=1e-4)
    assert (trained.jacobians[:, -1, 0, 0] - 1 / 1.12).abs().max() < 0.02, "absolute registration keeps the stretch"
    with pytest.raises(UserFacingError, match="registration_transfer must be"):
        AnimatorModule(descriptor=KeypointDescriptor(num_keypoints=3, jacobians=True), backbone=WarpingGenerator, image_size=64,
                       registration=[[0.0, 0.0, 1.0]], registration_transfer="rigid")


def test_registration_needs_keypoints_with_jacobians_and_proper_windows():
    with pytest.raises(UserFacingError, match="registration needs a descriptor with keypoints and Jacobians"):
        make_animator(jacobians=False)
    with pytest.raises(UserFacingError, match=r"windows \[x, y, half side\]"):
        AnimatorModule(descriptor=KeypointDescriptor(num_keypoints=3, jacobians=True), backbone=WarpingGenerator, image_size=64,
                       registration=[[0.0, 0.0, 0.0]])


def test_video_animation_registers_each_frame_with_the_drivers_first(frames):
    """``lightning_app.animate``'s frame loop gives what ``animate`` gives for the same driver in relative transfer."""
    from lightning_app.animate import Animation

    animator = make_animator().eval()
    shift = torch.tensor([[[1.0, 0.0, 0.05], [0.0, 1.0, -0.03]]]).expand(4, 2, 3)
    driver = warp_affine(frames, shift)
    to_rgb = lambda t: (t.permute(1, 2, 0).numpy() * 255).round().astype("uint8")  # noqa: E731
    animation = Animation(animator, frames[:1], human=None, relative=True)
    outputs = [animation(to_rgb(frame)) for frame in (frames[1], driver[1])]
    animated = torch.tensor(outputs[1] / 255.0, dtype=torch.float32).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = animator.animate(frames[:1], torch.tensor(to_rgb(driver[1]) / 255.0, dtype=torch.float32).permute(2, 0, 1)[None],
                                    torch.tensor(to_rgb(frames[1]) / 255.0, dtype=torch.float32).permute(2, 0, 1)[None])["relative"]
    assert (animated - expected).abs().max() < 1.5 / 255
    assert animation.unregistered == 0
    animation(to_rgb(torch.full_like(frames[0], 0.5)))  # nothing ECC could align: counted for the report
    assert animation.unregistered == 1


def test_the_registration_config_trains_from_the_cli_and_logs_what_it_aligned(tmp_path):
    extra = [f"--config={CONFIGS / 'backbone' / 'warping.yaml'}", f"--config={CONFIGS / 'registration.yaml'}"]
    cli = run_cli(tiny_args(tmp_path, steps=2, extra=extra))
    rates = metric_by_step(Path(cli.trainer.log_dir), "train/registered")
    assert len(rates) == 2 and all(0.0 <= rate <= 1.0 for rate in rates.values())
    assert cli.model.registration == [(0.0, 0.0, 1.0), (0.0, 0.25, 0.5)]
    keypoints = cli.model.descriptor.spec.num_keypoints
    assert cli.model.backbone.dense_motion.mask.out_channels == keypoints + 3, "identity, the keypoints and two registrations"
    parts = metric_by_step(Path(cli.trainer.log_dir), "train/backbone/parts")
    assert cli.model.backbone.part_weight == 0.1 and len(parts) == 2 and all(0.0 < value < 1.0 for value in parts.values()), \
        "the head-moves, body-stays term is trained (puppet batches carry region maps)"
