"""Each descriptor config, and the backbone configs combined with them, trains from the CLI on puppet data."""

from pathlib import Path

import pytest

from conftest import CONFIGS, metric_by_step, run_cli, tiny_args
from modules.backbones import ExpressionPoseGenerator, FiLMUNet, WarpingGenerator
from modules.descriptors import KeypointDescriptor, RigDescriptor, SemanticDescriptor, ViTDescriptor

CASES = [
    ("keypoints.yaml", None, KeypointDescriptor, FiLMUNet, ["descriptor/equivariance", "descriptor/jacobian"]),
    ("keypoints.yaml", "warping.yaml", KeypointDescriptor, WarpingGenerator, ["descriptor/equivariance"]),
    ("semantic.yaml", "convnext_unet.yaml", SemanticDescriptor, FiLMUNet, ["descriptor/segmentation"]),
    ("dino_regions.yaml", "warping.yaml", ViTDescriptor, WarpingGenerator, ["descriptor/segmentation"]),
    ("keypoints.yaml", "expression_pose.yaml", KeypointDescriptor, ExpressionPoseGenerator, ["descriptor/equivariance", "backbone/warp_mask"]),
    ("rig.yaml", None, RigDescriptor, ExpressionPoseGenerator, ["descriptor/parameters", "descriptor/keypoints", "backbone/warp_mask", "backbone/change_outside", "motion"]),
]


@pytest.mark.parametrize("config,backbone,descriptor_class,backbone_class,logged", CASES)
def test_config_trains_and_logs_descriptor_losses(tmp_path, config, backbone, descriptor_class, backbone_class, logged):
    extra = [f"--config={CONFIGS / 'backbone' / backbone}"] if backbone else []
    if config.startswith("dino"):
        extra += ["--model.descriptor.init_args.pretrained=false", "--model.descriptor.init_args.input_size=56"]
    cli = run_cli(tiny_args(tmp_path, config=config, steps=3, extra=extra))
    assert type(cli.model.descriptor) is descriptor_class and type(cli.model.backbone) is backbone_class
    if backbone == "convnext_unet.yaml":
        assert type(cli.model.backbone.mid).__name__ == "FiLMConvNeXtBlock"
    log_dir = Path(cli.trainer.log_dir)
    for key in ["train/loss", *(f"train/{name}" for name in logged)]:
        assert len(metric_by_step(log_dir, key)) == 3, key
    assert metric_by_step(log_dir, "val/l1")
