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


def test_the_registration_config_trains_from_the_cli_and_logs_what_it_aligned(tmp_path):
    extra = [f"--config={CONFIGS / 'backbone' / 'warping.yaml'}", f"--config={CONFIGS / 'registration.yaml'}"]
    cli = run_cli(tiny_args(tmp_path, steps=2, extra=extra))
    rates = metric_by_step(Path(cli.trainer.log_dir), "train/registered")
    assert len(rates) == 2 and all(0.0 <= rate <= 1.0 for rate in rates.values())
    assert cli.model.registration == [(0.0, 0.0, 1.0), (0.0, 0.25, 0.5)]
    keypoints = cli.model.descriptor.spec.num_keypoints
    assert cli.model.backbone.dense_motion.mask.out_channels == keypoints + 3, "identity, the keypoints and two registrations"
