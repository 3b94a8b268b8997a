"""Motion descriptors: output contract, frozen evaluation, and pretrained-weight loading from a local file."""

import timm
import torch
import pytest

from modules.descriptors import KeypointDescriptor, ViTDescriptor
from modules.errors import PretrainedWeightsError

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
    descriptor.heatmaps = lambda x: 20.0 * torch.nn.functional.avg_pool2d(x[:, :1], 4)  # type: ignore[method-assign]
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
