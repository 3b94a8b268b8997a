"""ExpressionPoseGenerator: an untrained one copies the portrait, its warp mask keeps body and background still,
and its synthesis paints what no warp of the portrait holds (a closed eye from an open one)."""

import numpy as np
import pytest
import torch

from core.vocabulary import EXPRESSION_REGIONS, HEAD_REGIONS, PARAMETER_INDEX, default_parameters
from datamodules.puppet import PuppetIdentity, render_puppet
from modules.backbones import ExpressionPoseGenerator, FiLMUNet
from modules.descriptors import Motion, MotionSpec
from modules.descriptors.rig import normalise_rig_parameters
from modules.losses import pixel_error, region_error, region_mask

SPEC = MotionSpec(vector_dim=len(default_parameters()), map_channels=0)


def image(frame) -> torch.Tensor:
    return torch.from_numpy(frame.image).permute(2, 0, 1).float() / 255.0


def pose(**values: float) -> np.ndarray:
    params = default_parameters()
    for name, value in values.items():
        params[PARAMETER_INDEX[name]] = value
    return params


def motion(params: np.ndarray) -> Motion:
    return Motion(vector=normalise_rig_parameters(torch.from_numpy(np.asarray(params, np.float32))))


def pairs(identities: list[int], poses: list[tuple[np.ndarray, np.ndarray]], size: int = 64) -> dict[str, torch.Tensor]:
    """Puppet (source, driving) pairs with their region maps and motions (the true parameters, normalised)."""
    batch: dict[str, list] = {k: [] for k in ("source", "driving", "source_regions", "driving_regions", "m_src", "m_drv")}
    for seed in identities:
        identity = PuppetIdentity.from_seed(seed)
        for p_src, p_drv in poses:
            src, drv = render_puppet(identity, p_src, size), render_puppet(identity, p_drv, size)
            batch["source"].append(image(src))
            batch["driving"].append(image(drv))
            batch["source_regions"].append(torch.from_numpy(src.regions).long())
            batch["driving_regions"].append(torch.from_numpy(drv.regions).long())
            batch["m_src"].append(motion(p_src).vector)
            batch["m_drv"].append(motion(p_drv).vector)
    return {k: torch.stack(v) for k, v in batch.items()}


def fit(net: ExpressionPoseGenerator, batch: dict[str, torch.Tensor], steps: int, lr: float = 1e-3) -> None:
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        generated = net.generate(batch["source"], Motion(batch["m_src"]), Motion(batch["m_drv"]))
        loss = pixel_error(generated.prediction, batch["driving"], beta=0.1).mean() + sum(net.auxiliary_losses(generated, batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_untrained_generator_returns_the_portrait_exactly():
    net = ExpressionPoseGenerator(SPEC, width=8, depth=2)
    source = torch.rand(2, 3, 32, 32)
    m_src, m_drv = Motion(torch.zeros(2, SPEC.vector_dim)), Motion(torch.randn(2, SPEC.vector_dim))
    generated = net.generate(source, m_src, m_drv)
    assert torch.equal(generated.prediction, source)
    assert set(generated.maps) == {"flow", "warp_mask", "change_mask", "warped"}
    assert generated.maps["change_mask"].mean().item() == pytest.approx(torch.sigmoid(torch.tensor(-2.0)).item(), abs=1e-6)


def test_pixels_outside_the_warp_mask_do_not_move():
    net = ExpressionPoseGenerator(SPEC, width=8, depth=2, change_bias=-30.0)
    with torch.no_grad():
        final = net.head[-1]
        final.bias[-3:-1] = 0.3  # a large flow everywhere ...
        final.bias[-1] = -30.0  # ... but a closed warp mask
    source = torch.rand(1, 3, 32, 32)
    still = net(source, Motion(torch.zeros(1, SPEC.vector_dim)), Motion(torch.zeros(1, SPEC.vector_dim)))
    assert torch.allclose(still, source, atol=1e-6)
    with torch.no_grad():
        net.head[-1].bias[-1] = 30.0  # open mask: the same flow moves the picture
    moved = net(source, Motion(torch.zeros(1, SPEC.vector_dim)), Motion(torch.zeros(1, SPEC.vector_dim)))
    assert (moved - source).abs().mean() > 0.05


def test_learned_warp_mask_covers_the_head_and_leaves_body_and_background():
    torch.manual_seed(0)
    turns = [(pose(), pose(ParamAngleX=a, ParamAngleZ=z)) for a, z in ((25, 0), (-25, 10), (15, -15))]
    batch = pairs([1, 2], turns)
    net = ExpressionPoseGenerator(SPEC, width=16, depth=2, warp_mask_weight=1.0)
    fit(net, batch, steps=80)
    with torch.no_grad():
        generated = net.generate(batch["source"], Motion(batch["m_src"]), Motion(batch["m_drv"]))
    head = torch.maximum(region_mask(batch["source_regions"], HEAD_REGIONS), region_mask(batch["driving_regions"], HEAD_REGIONS))
    mask = generated.maps["warp_mask"]
    inside, outside = (mask * head).sum() / head.sum(), (mask * (1 - head)).sum() / (1 - head).sum()
    assert inside > 0.7 and outside < 0.2, (inside.item(), outside.item())
    static = 1 - head
    change = ((generated.prediction - batch["source"]).abs().mean(1, keepdim=True) * static).sum() / static.sum()
    assert change < 0.02, "body and background must stay where the portrait has them"


@pytest.mark.parametrize("synthesis", ["shuffle", "smooth"])
def test_synthesis_closes_an_eye_that_no_warp_of_the_portrait_holds(synthesis):
    torch.manual_seed(0)
    blinks = [(pose(), pose(ParamEyeLOpen=0.0, ParamEyeROpen=0.0)), (pose(), pose(ParamEyeLOpen=0.0)), (pose(), pose())]
    batch = pairs([3, 4], blinks)
    eyes = region_mask(batch["source_regions"], EXPRESSION_REGIONS[:2])
    floor = region_error(batch["source"], batch["driving"], eyes, reduction="none")
    closing = torch.tensor([True, True, False] * 2)
    net = ExpressionPoseGenerator(SPEC, width=16, depth=2, synthesis=synthesis)
    fit(net, batch, steps=150)
    with torch.no_grad():
        generated = net.generate(batch["source"], Motion(batch["m_src"]), Motion(batch["m_drv"]))
    error = region_error(generated.prediction, batch["driving"], eyes, reduction="none")
    assert (error[closing] < 0.5 * floor[closing]).all(), (error[closing], floor[closing])
    synthesised = (generated.prediction - generated.maps["warped"]).abs().mean(1, keepdim=True)
    in_eyes = (synthesised * eyes).sum() / eyes.sum()
    elsewhere = (synthesised * (1 - eyes)).sum() / (1 - eyes).sum()
    assert in_eyes > 4 * elsewhere, "the change is painted where the eyes are"


def test_plain_l1_trains_a_copy_where_smooth_l1_learns_the_blink():
    """Why the reconstruction is smooth-L1: L1's full-strength gradient on the many pixels that must not change
    outvotes the few that should (measured: the FiLM U-Net's eye error stays at the copy's under L1)."""
    blinks = [(pose(), pose(ParamEyeLOpen=0.0, ParamEyeROpen=0.0)), (pose(), pose(ParamEyeLOpen=0.0)), (pose(), pose(ParamMouthOpenY=1.0))]
    batch = pairs([3, 4], blinks)
    eyes = region_mask(batch["source_regions"], EXPRESSION_REGIONS)
    floor = region_error(batch["source"], batch["driving"], eyes).item()
    errors = {}
    for beta in (0.0, 0.1):
        torch.manual_seed(0)
        net = FiLMUNet(SPEC, width=16, depth=2)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(100):
            prediction = net(batch["source"], Motion(batch["m_src"]), Motion(batch["m_drv"]))
            loss = pixel_error(prediction, batch["driving"], beta).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        errors[beta] = region_error(prediction.detach(), batch["driving"], eyes).item()
    assert errors[0.0] > 0.8 * floor and errors[0.1] < 0.3 * floor, (errors, floor)
