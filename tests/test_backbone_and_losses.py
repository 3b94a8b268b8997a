"""FiLM U-Net and the loss terms."""

import pytest
import torch

from core.errors import PretrainedWeightsError
from modules.backbones import FiLMUNet
from modules.descriptors import KeypointDescriptor, Motion, MotionSpec
from modules.losses import LossWeights, PerceptualLoss, descriptor_delta_loss, pyramid_error, residual_tv_loss, rgb_residual_motion_loss


def motion(batch: int, spec: MotionSpec, size: int = 8) -> Motion:
    maps = torch.rand(batch, spec.map_channels, size, size) if spec.map_channels else None
    return Motion(vector=torch.randn(batch, spec.vector_dim), maps=maps)


@pytest.mark.parametrize("fold,map_channels", [(4, 5), (2, 0)])
def test_untrained_unet_returns_the_source_and_every_part_learns(fold, map_channels):
    spec = MotionSpec(vector_dim=10, map_channels=map_channels)
    net = FiLMUNet(spec, channels=3, width=8, depth=2, embed_dim=16, fold=fold)
    source = torch.rand(2, 3, 32, 32)
    src, drv = motion(2, spec), motion(2, spec)
    assert torch.equal(net(source, src, drv), source)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    target = torch.rand(2, 3, 32, 32)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.l1_loss(net(source, src, drv), target).backward()
        opt.step()
    untouched = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert untouched == []
    changed = net(source, src, drv)
    assert not torch.allclose(changed, net(source, src, motion(2, spec))), "driving motion must change the output"


def test_unet_names_the_size_it_needs():
    net = FiLMUNet(MotionSpec(4, 0), width=8, depth=3, fold=4)
    with pytest.raises(ValueError, match="multiples of 32, got 48×48"):
        net(torch.rand(1, 3, 48, 48), motion(1, MotionSpec(4, 0)), motion(1, MotionSpec(4, 0)))


def test_loss_terms_vanish_exactly_when_they_should():
    source = torch.rand(2, 3, 16, 16)
    assert residual_tv_loss(source + 0.3, source) == pytest.approx(0.0, abs=1e-6)
    assert residual_tv_loss(source + torch.rand_like(source), source) > 0.05
    driving = torch.rand_like(source)
    assert rgb_residual_motion_loss(driving, driving, source, sigma=1.0) == 0
    assert rgb_residual_motion_loss(source, driving, source, sigma=1.0) > 0
    m_src, m_drv = Motion(torch.randn(2, 6)), Motion(torch.randn(2, 6))
    assert descriptor_delta_loss(m_drv, m_drv, m_src) == 0
    assert descriptor_delta_loss(m_src, m_drv, m_src) == pytest.approx(((m_drv.vector - m_src.vector) ** 2).mean().item())
    with pytest.raises(ValueError, match="tv must be non-negative"):
        LossWeights(tv=-1.0)


def test_pyramid_error_tells_a_near_miss_from_a_far_one():
    """At full size a square moved past itself costs the same however far it went; a pyramid's coarse levels
    still see the near miss overlap."""
    target = torch.zeros(1, 1, 64, 64)
    target[..., 20:28, 8:16] = 1.0
    near, far = torch.roll(target, 12, dims=-1), torch.roll(target, 24, dims=-1)
    assert pyramid_error(near, target, 1) == pyramid_error(far, target, 1) == (near - target).abs().mean()
    assert pyramid_error(near, target, 4) < pyramid_error(far, target, 4)
    assert pyramid_error(target, target, 4) == 0
    with pytest.raises(ValueError, match="scales must be at least 1"):
        pyramid_error(near, target, 0)


def test_perceptual_loss_uses_local_vgg_weights(tmp_path):
    import torchvision

    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    loss = PerceptualLoss(str(path))
    image = torch.rand(2, 3, 32, 32)
    assert loss(image, image) == 0
    assert loss(image, torch.rand_like(image)) > 0
    assert not any(p.requires_grad for p in loss.parameters())
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "partial.pth")
    with pytest.raises(PretrainedWeightsError, match="lack VGG-16 keys"):
        PerceptualLoss(str(tmp_path / "partial.pth"))
    with pytest.raises(PretrainedWeightsError, match="do not exist"):
        PerceptualLoss(str(tmp_path / "none.pth"))


def test_keypoint_spec_matches_what_the_unet_consumes():
    descriptor = KeypointDescriptor(num_keypoints=4, width=8, input_size=32)
    net = FiLMUNet(descriptor.spec, width=8, depth=1, embed_dim=8, fold=2)
    frames = torch.rand(2, 3, 16, 16)
    m = descriptor(frames)
    assert net(frames, m, m).shape == frames.shape
