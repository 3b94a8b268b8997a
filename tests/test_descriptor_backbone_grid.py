"""Every descriptor with every backbone it makes sense with trains; the warping generator moves pixels with the
keypoints; combinations that cannot work are refused with a clear message."""

from functools import partial

import pytest
import torch

from datamodules.puppet_datamodule import PuppetPairs
from modules import AnimatorModule
from modules.backbones import FiLMUNet, WarpingGenerator
from modules.descriptors import KeypointDescriptor, Motion, SemanticDescriptor, ViTDescriptor
from modules.losses import LossWeights

DESCRIPTORS = {
    "keypoints": lambda: KeypointDescriptor(num_keypoints=5, width=8, input_size=32, jacobians=True, equivariance_weight=1.0, jacobian_weight=0.1),
    "semantic": lambda: SemanticDescriptor(input_size=32, decoder_width=16),
    "vit_grid": lambda: ViTDescriptor(pretrained=False, input_size=28, grid=2, projection_dim=16),
    "vit_semantic": lambda: ViTDescriptor(pretrained=False, input_size=28, projection_dim=16, regions=SemanticDescriptor(input_size=32, decoder_width=16)),
}
BACKBONES = {
    "film_residual": partial(FiLMUNet, width=8, depth=2, embed_dim=16),
    "film_convnext": partial(FiLMUNet, width=8, depth=2, embed_dim=16, block="convnext"),
    "warping": partial(WarpingGenerator, width=8, motion_width=8, num_blocks=1),
    "warp_only": partial(WarpingGenerator, motion_width=8, refine=False),
}
EXPECTED_DESCRIPTOR_LOSSES = {"keypoints": {"equivariance", "jacobian"}, "semantic": {"segmentation"}, "vit_grid": set(), "vit_semantic": {"segmentation"}}


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    pairs = PuppetPairs(list(range(8)), length=4, image_size=64, seed=0)
    return torch.utils.data.default_collate([pairs[i] for i in range(4)])


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("descriptor", DESCRIPTORS)
def test_descriptor_and_backbone_train_together(descriptor, backbone, batch):
    torch.manual_seed(0)
    if backbone in ("warping", "warp_only") and descriptor == "vit_grid":
        with pytest.raises(ValueError, match="needs a descriptor that locates points"):
            AnimatorModule(DESCRIPTORS[descriptor](), BACKBONES[backbone], image_size=64, losses=LossWeights(motion=0.01))
        return
    module = AnimatorModule(DESCRIPTORS[descriptor](), BACKBONES[backbone], image_size=64, losses=LossWeights(motion=0.01))
    optimizer = module.configure_optimizers()
    before = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    for _ in range(2):
        terms, prediction = module.compute_losses(batch)
        optimizer.zero_grad()
        module.total_loss(terms).backward()
        optimizer.step()
    assert prediction.shape == batch["driving"].shape and all(torch.isfinite(v) for v in terms.values())
    assert {n.removeprefix("descriptor/") for n in terms if n.startswith("descriptor/")} == EXPECTED_DESCRIPTOR_LOSSES[descriptor]
    moved = {n.split(".")[0] for n, p in module.named_parameters() if p.requires_grad and not torch.equal(p, before[n])}
    assert "backbone" in moved
    assert ("descriptor" in moved) == module.descriptor.trainable


@pytest.mark.parametrize("refine", [True, False])
def test_warping_generator_moves_the_image_with_the_keypoints(refine):
    torch.manual_seed(0)
    net = WarpingGenerator(KeypointDescriptor(num_keypoints=3).spec, width=8, motion_width=8, refine=refine)
    source = torch.rand(1, 3, 32, 32)
    keypoints = torch.rand(1, 3, 2) - 0.5
    still = net(source, Motion(torch.zeros(1, 6), keypoints=keypoints), Motion(torch.zeros(1, 6), keypoints=keypoints))
    assert torch.allclose(still, source, atol=1e-4), "equal motions: an untrained generator returns the source"
    with torch.no_grad():  # make every location follow the keypoints rather than the background
        net.dense_motion.mask.weight.zero_()
        net.dense_motion.mask.bias.copy_(torch.tensor([-20.0, 0.0, 0.0, 0.0]))
    shift = 4 * 2 / 31  # 4 pixels in normalised units (align_corners=True)
    moved = net(source, Motion(torch.zeros(1, 6), keypoints=keypoints), Motion(torch.zeros(1, 6), keypoints=keypoints + torch.tensor([shift, 0.0])))
    assert torch.allclose(moved[..., 8:24, 12:28], source[..., 8:24, 8:24], atol=1e-3), "keypoints moved 4 px right: so does the image"


def test_warp_only_generator_is_the_refined_one_without_its_correction():
    torch.manual_seed(0)
    spec = KeypointDescriptor(num_keypoints=4, jacobians=True).spec
    refined = WarpingGenerator(spec, width=8, motion_width=8)
    warp_only = WarpingGenerator(spec, motion_width=8, refine=False)
    assert warp_only.dense_motion.occlusion is None and not hasattr(warp_only, "encoder") and not hasattr(warp_only, "head")
    own = {k: v for k, v in refined.dense_motion.state_dict().items() if not k.startswith("occlusion.")}
    warp_only.dense_motion.load_state_dict(own)  # everything but the occlusion head is shared
    source = torch.rand(2, 3, 32, 32)
    jacobians = torch.eye(2) + 0.1 * torch.randn(2, 4, 2, 2)
    source_motion = Motion(torch.zeros(2, 8), keypoints=torch.rand(2, 4, 2) - 0.5, jacobians=jacobians)
    driving_motion = Motion(torch.zeros(2, 8), keypoints=torch.rand(2, 4, 2) - 0.5, jacobians=jacobians.flip(1))
    flow, _, _ = refined.dense_motion.at_image_size(source, source_motion, driving_motion, refined.motion_scale)
    warped = torch.nn.functional.grid_sample(source, flow, align_corners=True, padding_mode="border")
    prediction = warp_only(source, source_motion, driving_motion)
    assert (prediction - source).abs().mean() > 0.05, "different motions move pixels"
    assert torch.equal(prediction, warped), "the warp-only prediction is the dense motion's warp of the source"
    assert torch.allclose(refined(source, source_motion, driving_motion), warped, atol=1e-6), "an untrained correction is zero"
    with torch.no_grad():
        refined.head.bias.fill_(0.1)
    assert not torch.allclose(refined(source, source_motion, driving_motion), warped, atol=1e-3), "the refined one adds its correction"
    warp_only(source, source_motion, driving_motion).sum().backward()
    assert all(p.grad is not None for p in warp_only.parameters()), "no parameter goes unused (DDP needs every one)"


def test_semantic_descriptor_statistics_follow_its_maps():
    descriptor = SemanticDescriptor(input_size=32, decoder_width=16)
    logits = torch.full((1, 9, 8, 8), -20.0)
    logits[:, 0] = 0.0
    logits[:, 1, 2:4, 5:7] = 20.0  # "face" at rows 2–3, columns 5–6
    descriptor.logits = lambda frames: logits  # type: ignore[method-assign]
    motion = descriptor(torch.rand(1, 3, 32, 32))
    area, cx, cy, sx, sy = motion.vector[0, :5].tolist()
    assert area == pytest.approx(4 / 64, abs=1e-3)
    assert cx == pytest.approx(5.5 / 7 * 2 - 1, abs=1e-3) and cy == pytest.approx(2.5 / 7 * 2 - 1, abs=1e-3)
    assert sx == pytest.approx(1 / 7, abs=1e-3) and torch.allclose(motion.keypoints[0, 0], torch.tensor([cx, cy]))


def test_semantic_descriptor_without_labels_says_what_to_do(batch):
    descriptor = SemanticDescriptor(input_size=32, decoder_width=16)
    unlabelled = {k: v for k, v in batch.items() if k != "driving_regions"}
    with pytest.raises(Exception, match="no 'driving_regions'.*frozen"):
        descriptor.auxiliary_losses(batch["driving"], descriptor(batch["driving"]), unlabelled)


def test_trained_semantic_descriptor_loads_frozen_from_a_module_checkpoint(tmp_path, batch):
    module = AnimatorModule(DESCRIPTORS["semantic"](), BACKBONES["film_residual"], image_size=64)
    torch.save({"state_dict": module.state_dict()}, tmp_path / "animator.ckpt")
    frozen = SemanticDescriptor(input_size=32, decoder_width=16, checkpoint=str(tmp_path / "animator.ckpt"), frozen=True)
    module.descriptor.eval()
    assert not frozen.trainable and not frozen.training
    assert torch.allclose(frozen(batch["driving"]).vector, module.descriptor(batch["driving"]).vector, atol=1e-5)
    with pytest.raises(Exception, match="does not fit this descriptor"):
        SemanticDescriptor(input_size=32, decoder_width=8, checkpoint=str(tmp_path / "animator.ckpt"))
