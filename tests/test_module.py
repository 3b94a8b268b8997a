"""AnimatorModule: loss composition, where each loss's gradient goes, and that training fits a batch."""

from functools import partial

import pytest
import torch

from core.errors import UserFacingError
from datamodules import PuppetPairs
from modules import AnimatorModule, LossWeights
from modules.losses import pyramid_error
from modules.backbones import FiLMUNet
from modules.descriptors import KeypointDescriptor


def make_module(**kwargs) -> AnimatorModule:
    torch.manual_seed(0)
    return AnimatorModule(
        descriptor=KeypointDescriptor(num_keypoints=4, width=8, input_size=32),
        backbone=partial(FiLMUNet, width=8, depth=2, embed_dim=16, fold=2),
        image_size=32,
        **kwargs,
    )


@pytest.fixture(scope="module")
def batch():
    pairs = PuppetPairs(list(range(4)), length=4, image_size=32, seed=0)
    return torch.utils.data.default_collate([pairs[i] for i in range(4)])


def test_terms_follow_the_weights(batch):
    full, _ = make_module(losses=LossWeights(identity=0.5, tv=0.1, motion=0.1)).compute_losses(batch)
    assert set(full) == {"reconstruction", "identity", "tv", "motion"}
    bare, _ = make_module(losses=LossWeights(identity=0.0, tv=0.0, motion=0.0)).compute_losses(batch)
    assert set(bare) == {"reconstruction"}
    expression, _ = make_module(losses=LossWeights(expression=1.0)).compute_losses(batch)
    assert expression["expression"] > expression["reconstruction"], "the eye/brow/mouth pixels are where frames differ most"
    without_maps, _ = make_module(losses=LossWeights(expression=1.0)).compute_losses({k: v for k, v in batch.items() if "regions" not in k})
    assert "expression" not in without_maps
    rgb, _ = make_module(motion_loss="rgb_residual").compute_losses(batch)
    assert rgb["motion"] > 0


def test_untrained_animator_reproduces_the_source(batch):
    module = make_module()
    terms, prediction = module.compute_losses(batch)
    assert torch.equal(prediction, batch["source"])
    assert terms["identity"] == 0
    difference = batch["source"] - batch["driving"]
    smooth = torch.where(difference.abs() < 0.1, difference**2 / 0.2, difference.abs() - 0.05).mean()
    assert terms["reconstruction"].item() == pytest.approx(smooth.item(), rel=1e-5)  # smooth-L1, β 0.1 by default
    plain, _ = make_module(reconstruction_beta=0.0).compute_losses(batch)
    assert plain["reconstruction"].item() == pytest.approx(difference.abs().mean().item(), rel=1e-5)
    pyramid, _ = make_module(reconstruction_beta=0.0, reconstruction_scales=3).compute_losses(batch)
    expected = pyramid_error(batch["source"], batch["driving"], 3)
    assert pyramid["reconstruction"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert pyramid["reconstruction"] < plain["reconstruction"], "blurred levels differ less than full-size frames"


@pytest.mark.parametrize("scales", [0, 5])
def test_reconstruction_scales_must_leave_a_coarsest_level(scales):
    make_module(reconstruction_scales=4)  # 32, 16, 8, 4
    with pytest.raises(UserFacingError, match=rf"model.reconstruction_scales .* \(image_size 32: at most 4\), got {scales}"):
        make_module(reconstruction_scales=scales)


def test_motion_loss_on_the_prediction_does_not_train_the_descriptor(batch):
    """Untrained, the prediction is the source (zero output layer), so the only path from the motion loss to the
    descriptor would be describing the prediction; that pass holds the descriptor fixed."""
    module = make_module(losses=LossWeights(identity=0.0, tv=0.0, motion=1.0))
    terms, _ = module.compute_losses(batch)
    assert terms["motion"] > 0
    terms["motion"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in module.descriptor.parameters())
    assert module.backbone.head[-1].weight.grad.abs().sum() > 0


def test_training_fits_a_batch(batch):
    module = make_module(losses=LossWeights(identity=0.1, tv=0.0, motion=0.0))
    optimizer = module.configure_optimizers()
    losses = []
    for _ in range(80):
        optimizer.zero_grad()
        terms, _ = module.compute_losses(batch)
        loss = terms["reconstruction"] + 0.1 * terms["identity"]
        loss.backward()
        optimizer.step()
        losses.append(terms["reconstruction"].item())
    assert losses[-1] < 0.6 * losses[0]


def test_perceptual_without_weights_is_a_clear_error():
    with pytest.raises(UserFacingError, match="perceptual_weights"):
        make_module(losses=LossWeights(perceptual=0.1))


@torch.no_grad()
def test_the_streaming_api_animates_frame_by_frame_as_the_batched_pairs(batch):
    module = make_module().eval()
    with torch.no_grad():
        for parameter in module.backbone.parameters():  # an untrained backbone returns the portrait: make it react
            parameter.add_(0.05 * torch.randn_like(parameter))
    source, driving = batch["source"][:1].expand(4, -1, -1, -1), batch["driving"]
    first = driving[:1].expand(4, -1, -1, -1)
    batched = module.animate(source, driving, first, scale_movement=True)
    portrait = module.prepare(batch["source"][:1])
    reference = module.describe(driving[:1])
    for t in range(4):
        frame = driving[t : t + 1]
        assert torch.allclose(module.animate_frame(portrait, frame), batched["absolute"][t : t + 1], atol=1e-5)
        relative = module.animate_frame(portrait, frame, reference, scale_movement=True)
        assert torch.allclose(relative, batched["relative"][t : t + 1], atol=1e-5)
        assert torch.allclose(module.animate_motion(portrait, module.describe(frame), reference, scale_movement=True), relative)
    unscaled = module.animate_frame(portrait, driving[3:], reference, scale_movement=False)
    assert not torch.allclose(unscaled, batched["relative"][3:], atol=1e-4), "movement scaling changes the relative answer"
    assert torch.allclose(module.animate_frame(portrait, driving[3:], reference), unscaled), "the module's default: unscaled"
    keypoints = module.describe(driving[3:])
    assert torch.allclose(module.animate_motion(portrait, module.motion_from_vector(keypoints.vector)),
                          module.animate_motion(portrait, keypoints), atol=1e-5), "keypoints are their vector (what an adapter predicts)"
