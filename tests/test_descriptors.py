"""Motion descriptors: output contract, frozen evaluation, and pretrained-weight loading from a local file."""

import timm
import torch
import pytest

from kornia.geometry.subpix import spatial_expectation2d

from core.errors import PretrainedWeightsError
from core.vocabulary import KEYPOINT_NAMES
from datamodules.puppet_datamodule import PuppetPairs
from modules.descriptors import KeypointDescriptor, ViTDescriptor
from core.warps import RandomWarp
from modules.descriptors.keypoint_priors import concentration_loss, separation_loss
from modules.descriptors.landmarks import landmark_loss

TINY_VIT = "vit_small_patch14_dinov2.lvd142m"


def test_keypoints_contract_and_range():
    descriptor = KeypointDescriptor(num_keypoints=6, width=8, input_size=32)
    motion = descriptor(torch.rand(3, 3, 48, 48))
    assert motion.vector.shape == (3, 12) and motion.keypoints.shape == (3, 6, 2)
    assert motion.maps.shape == (3, 6, 8, 8) and descriptor.spec.map_channels == 6
    assert motion.keypoints.abs().max() <= 1.0
    assert torch.allclose(motion.maps.amax(dim=(-2, -1)), torch.ones(3, 6))
    assert torch.equal(motion.vector, motion.keypoints.flatten(1))


def test_keypoints_track_a_moving_blob():
    """Soft-argmax follows the heatmap peak: a head that copies a bright blob must move its keypoint with it."""
    descriptor = KeypointDescriptor(num_keypoints=1, width=8, input_size=32, temperature=0.05)
    frames = torch.zeros(2, 3, 32, 32)
    frames[0, :, 6:10, 6:10] = 1.0
    frames[1, :, 22:26, 22:26] = 1.0
    descriptor.features = lambda x: 20.0 * torch.nn.functional.avg_pool2d(x[:, :1], 4)  # type: ignore[method-assign]
    descriptor.head = torch.nn.Identity()
    kp = descriptor(frames).keypoints[:, 0]
    assert (kp[1] - kp[0] > 0.7).all()


def test_frozen_description_trains_the_input_not_the_descriptor():
    descriptor = KeypointDescriptor(width=8, input_size=32)
    frames = torch.rand(2, 3, 32, 32, requires_grad=True)
    descriptor.describe_frozen(frames).vector.square().sum().backward()
    assert frames.grad is not None and frames.grad.abs().sum() > 0
    assert all(p.grad is None for p in descriptor.parameters())


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory) -> str:
    """Random DINOv2 ViT-S/14 weights at its native 518² size, saved as a user's downloaded file would be."""
    path = tmp_path_factory.mktemp("weights") / "dinov2_vits14.pth"
    model = timm.create_model(TINY_VIT, pretrained=False, num_classes=0)
    torch.save(model.state_dict(), path)
    return str(path)


def test_vit_loads_a_local_weights_file_and_resizes_position_embeddings(vit_weights):
    saved = torch.load(vit_weights, weights_only=True)
    descriptor = ViTDescriptor(model_name=TINY_VIT, weights_path=vit_weights, input_size=56, grid=2)
    loaded = descriptor.vit.state_dict()
    assert torch.equal(loaded["blocks.3.attn.qkv.weight"], saved["blocks.3.attn.qkv.weight"])
    assert loaded["pos_embed"].shape[1] < saved["pos_embed"].shape[1]  # 4×4 patches + cls instead of 37×37 + cls
    assert not descriptor.trainable and not descriptor.vit.training
    motion = descriptor(torch.rand(2, 3, 64, 64))
    assert motion.maps.shape == (2, 384, 2, 2) and motion.vector.shape == (2, 384 * 4)


def test_vit_projection_is_trainable_while_the_vit_stays_frozen():
    descriptor = ViTDescriptor(model_name=TINY_VIT, pretrained=False, input_size=28, grid=2, projection_dim=8)
    assert descriptor.trainable and descriptor.spec.vector_dim == 32
    descriptor.train()
    assert not descriptor.vit.training and descriptor.projection.training
    assert not any(p.requires_grad for p in descriptor.vit.parameters())


def test_vit_weight_errors_name_the_file_and_both_ways(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="missing.pth.*does not exist"):
        ViTDescriptor(model_name=TINY_VIT, weights_path=str(tmp_path / "missing.pth"), input_size=28)
    wrong = tmp_path / "wrong.pth"
    torch.save({"nothing": torch.zeros(1)}, wrong)
    with pytest.raises(PretrainedWeightsError, match="does not fit"):
        ViTDescriptor(model_name=TINY_VIT, weights_path=str(wrong), input_size=28)
    with pytest.raises(PretrainedWeightsError, match="unknown timm model"):
        ViTDescriptor(model_name="vit_nonexistent", input_size=28)
    with pytest.raises(ValueError, match="multiple of .* patch size 14"):
        ViTDescriptor(model_name=TINY_VIT, pretrained=False, input_size=30)


def test_random_warp_moves_points_with_the_image():
    """warped(p) = image(T(p)): a dot drawn at q in the image is found at p in the warped image with T(p) ≈ q."""
    torch.manual_seed(0)
    warp = RandomWarp.sample(4, affine_std=0.1, tps_std=0.01)
    image = torch.zeros(4, 1, 64, 64)
    image[:, :, 30:34, 20:24] = 1.0  # centre (21.5, 31.5) px → normalised (21.5 / 63 · 2 − 1, 0)
    warped = warp.image(image)
    found = spatial_expectation2d(warped / warped.sum(dim=(-2, -1), keepdim=True), normalized_coordinates=True)
    target = torch.tensor([21.5 / 63 * 2 - 1, 0.0]).expand(4, 1, 2)
    assert (warp.points(found) - target).abs().max() < 0.03
    assert (found - target).abs().max() > 0.03, "the warp should move the dot"
    identity = RandomWarp.sample(2, affine_std=0.0, tps_std=0.0)
    assert torch.allclose(identity.image(image[:2]), image[:2], atol=1e-5)
    jac = identity.jacobian(torch.rand(2, 3, 2) * 2 - 1)
    assert torch.allclose(jac, torch.eye(2).expand(2, 3, 2, 2), atol=1e-4)


def test_equivariance_loss_falls_on_puppet_frames():
    torch.manual_seed(0)
    pairs = PuppetPairs(list(range(16)), length=64, image_size=64, seed=0)
    frames = torch.stack([pairs[i]["driving"] for i in range(64)])
    descriptor = KeypointDescriptor(num_keypoints=8, width=8, input_size=64, jacobians=True, equivariance_weight=1.0,
                                    jacobian_weight=0.1, warp_color_jitter=0.3, edge_emphasis=True)
    optimizer = torch.optim.Adam(descriptor.parameters(), lr=3e-3)
    history = []
    for step in range(60):
        batch = frames[(step * 16) % 64 :][:16]
        terms = descriptor.auxiliary_losses(batch, descriptor(batch), {})
        optimizer.zero_grad()
        sum(terms.values()).backward()
        optimizer.step()
        history.append(terms["equivariance"].item())
    first, last = sum(history[:10]) / 10, sum(history[-10:]) / 10
    assert last < 0.6 * first, f"equivariance loss {first:.4f} → {last:.4f}"


def test_landmark_supervision_places_the_named_keypoints_and_leaves_the_others_free():
    """The first 12 keypoints learn the puppet's landmarks (eyes, brows, mouth, nose, chin); keypoints past them are
    not compared, and a descriptor with fewer keypoints than landmarks is refused."""
    torch.manual_seed(0)
    pairs = PuppetPairs(list(range(16)), length=48, image_size=64, seed=0)
    items = [pairs[i] for i in range(48)]
    frames = torch.stack([item["driving"] for item in items])
    landmarks = torch.stack([item["driving_keypoints"] for item in items])
    descriptor = KeypointDescriptor(num_keypoints=14, width=8, input_size=64, landmark_weight=1.0)
    assert descriptor.spec.keypoint_names[:12] == KEYPOINT_NAMES and len(descriptor.spec.keypoint_names) == 14

    def pixel_error() -> float:
        with torch.no_grad():
            named = (descriptor(frames).keypoints[:, :12] + 1.0) / 2.0 * 63
        return (named - landmarks).norm(dim=-1).mean().item()

    before = pixel_error()
    optimizer = torch.optim.Adam(descriptor.parameters(), lr=3e-3)
    for step in range(80):
        chosen = slice((step * 16) % 48, (step * 16) % 48 + 16)
        terms = descriptor.auxiliary_losses(frames[chosen], descriptor(frames[chosen]), {"driving_keypoints": landmarks[chosen]})
        optimizer.zero_grad()
        terms["landmarks"].backward()
        optimizer.step()
    after = pixel_error()
    assert after < 0.5 * before, f"landmark error {before:.1f} px → {after:.1f} px"

    motion = descriptor(frames[:4])
    moved = motion.keypoints.clone()
    moved[:, 12:] += 0.5
    same = [landmark_loss(k, landmarks[:4], 64) for k in (motion.keypoints, moved)]
    assert torch.equal(same[0], same[1])
    assert "landmarks" not in descriptor.auxiliary_losses(frames[:4], motion, {})  # imported footage: no landmarks
    with pytest.raises(ValueError, match="num_keypoints ≥ 12"):
        KeypointDescriptor(num_keypoints=10, landmark_weight=1.0)


def test_concentration_is_the_heatmap_variance():
    """0 for one cell; for two cells of equal mass the squared half-distance between them; the uniform value."""
    peak = torch.zeros(1, 1, 16, 16)
    peak[0, 0, 5, 9] = 1.0
    assert concentration_loss(peak).item() == pytest.approx(0.0, abs=1e-6)
    pair = torch.zeros(1, 1, 16, 16)
    pair[0, 0, 3, 0] = pair[0, 0, 3, 15] = 0.5  # x = −1 and 1: variance 1 in x, 0 in y
    assert concentration_loss(pair).item() == pytest.approx(1.0, abs=1e-5)
    uniform = torch.full((2, 3, 16, 16), 1.0 / 256)
    steps = torch.linspace(-1, 1, 16)
    assert concentration_loss(uniform).item() == pytest.approx(2 * steps.square().mean().item(), rel=1e-5)


def test_separation_pushes_coinciding_keypoints_apart():
    together = torch.zeros(2, 5, 2)
    assert separation_loss(together, 0.1).item() == pytest.approx(1.0)
    apart = torch.tensor([[[-0.8, -0.8], [0.8, -0.8], [0.0, 0.0], [-0.8, 0.8], [0.8, 0.8]]])
    assert separation_loss(apart, 0.1).item() < 1e-10
    points = (0.01 * torch.randn(1, 6, 2)).requires_grad_()
    optimizer = torch.optim.SGD([points], lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        separation_loss(points, 0.1).backward()
        optimizer.step()
    closest = torch.cdist(points[0], points[0]).add(torch.eye(6) * 9).min().item()
    assert closest > 0.1, f"closest pair {closest:.3f} apart"
    with pytest.raises(ValueError, match="at least 2 keypoints"):
        separation_loss(torch.zeros(1, 1, 2), 0.1)


def test_keypoint_priors_spread_and_sharpen_a_descriptor_on_puppet_frames():
    """With the priors (and equivariance, as configured), keypoints end further apart and their heatmaps
    tighter than with equivariance alone, from the same start."""
    pairs = PuppetPairs(list(range(16)), length=32, image_size=64, seed=0)
    frames = torch.stack([pairs[i]["driving"] for i in range(32)])

    def train(concentration: float, separation: float) -> tuple[float, float]:
        torch.manual_seed(0)
        descriptor = KeypointDescriptor(num_keypoints=6, width=8, input_size=64, equivariance_weight=1.0,
                                        concentration_weight=concentration, separation_weight=separation)
        optimizer = torch.optim.Adam(descriptor.parameters(), lr=3e-3)
        for step in range(40):
            batch = frames[(step * 16) % 32 :][:16]
            terms = descriptor.auxiliary_losses(batch, descriptor(batch), {})
            optimizer.zero_grad()
            sum(terms.values()).backward()
            optimizer.step()
        with torch.no_grad():
            motion, heatmaps = descriptor.locate(frames)
        return separation_loss(motion.keypoints, 0.1).item(), concentration_loss(heatmaps).item()

    plain, primed = train(0.0, 0.0), train(1.0, 1.0)
    assert primed[0] < 0.5 * plain[0], f"separation {plain[0]:.3f} → {primed[0]:.3f}"
    assert primed[1] < 0.5 * plain[1], f"concentration {plain[1]:.3f} → {primed[1]:.3f}"
    with pytest.raises(ValueError, match="separation needs 2 or more keypoints"):
        KeypointDescriptor(num_keypoints=1, separation_weight=0.1)
    with pytest.raises(ValueError, match="non-negative"):
        KeypointDescriptor(concentration_weight=-1.0)
