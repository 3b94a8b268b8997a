"""RigDescriptor: parameters a character lacks or that are unknown never become targets; the data says which are
known; training on data without any refuses with the clips named."""

import math

import numpy as np
import pytest
import torch

from conftest import CONFIGS, run_cli_process, tiny_args, write_puppet_clips
from core.errors import UserFacingError
from core.vocabulary import PARAMETER_INDEX, PARAMETER_NAMES
from datamodules import Live2DClipDataModule
from datamodules.augmentation import PairAugmentation
from datamodules.live2d.clips import ClipInfo, write_clip
from lightning_app.cli import AnimatorCLI
from modules.descriptors import RigDescriptor
from modules.descriptors.rig import masked_parameter_loss, normalise_rig_parameters


def test_normalised_parameters_span_minus_one_to_one():
    low = torch.tensor([-30.0, -30, -30, 0, 0, -1, -1, -1, -1, 0, -1])
    high = torch.tensor([30.0, 30, 30, 1, 1, 1, 1, 1, 1, 1, 1])
    assert torch.equal(normalise_rig_parameters(low), -torch.ones(11)) and torch.equal(normalise_rig_parameters(high), torch.ones(11))


def test_missing_and_unknown_parameters_are_not_targets():
    predicted = torch.zeros(2, 11, requires_grad=True)
    target = torch.full((2, 11), 0.5)
    target[1, 3] = float("nan")  # unknown (imported footage)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[:, PARAMETER_INDEX["ParamMouthForm"]] = False  # the character has no such parameter
    target[:, PARAMETER_INDEX["ParamMouthForm"]] = 100.0  # whatever is stored there must not matter
    loss = masked_parameter_loss(predicted, target, mask)
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(0.5 - 0.025)  # smooth-L1 (β 0.05) of 0.5
    loss.backward()
    assert predicted.grad[:, PARAMETER_INDEX["ParamMouthForm"]].abs().sum() == 0 and predicted.grad[1, 3] == 0
    assert (predicted.grad[0, :3] != 0).all()
    nothing = masked_parameter_loss(predicted, target, torch.zeros_like(mask))
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_descriptor_learns_the_parameters_and_reports_its_loss():
    torch.manual_seed(0)
    descriptor = RigDescriptor(input_size=32)
    frames = torch.rand(4, 3, 32, 32)
    batch = {"driving_params": torch.tensor([[20.0, 0, 0, 1, 0, 0, 0, 0, 0, 0.5, 0]] * 4), "driving_param_mask": torch.ones(4, 11, dtype=torch.bool)}
    optimizer = torch.optim.Adam(descriptor.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        terms = descriptor.auxiliary_losses(frames, descriptor(frames), batch)
        optimizer.zero_grad()
        terms["parameters"].backward()
        optimizer.step()
        losses.append(terms["parameters"].item())
    assert losses[-1] < 0.2 * losses[0]
    assert descriptor.spec.vector_dim == len(PARAMETER_NAMES) and descriptor.needs_parameters


def test_clip_batches_mark_the_parameters_a_character_lacks(tmp_path):
    root = write_puppet_clips(tmp_path / "clips", {"A": 1, "B": 2, "C": 3}, frames=6, missing={"A": ("ParamMouthForm",), "B": ("ParamBrowLY",)})
    dm = Live2DClipDataModule(str(root), image_size=32, batch_size=16, num_workers=0, held_out=["C"], train_pairs=16)
    batch = next(iter(dm.train_dataloader()))
    names = sorted(["A", "B", "C"])
    for i, identity in enumerate(batch["identity"].tolist()):
        lacking = {"A": "ParamMouthForm", "B": "ParamBrowLY"}[names[identity]]
        assert not batch["driving_param_mask"][i, PARAMETER_INDEX[lacking]] and batch["driving_param_mask"][i].sum() == 10
    assert batch["source_regions"].shape == batch["driving_regions"].shape == (16, 32, 32)
    augmentation = PairAugmentation(jitter_p=0.0, affine_p=0.0, flip_p=1.0)
    flipped = augmentation(batch)
    left, right = PARAMETER_INDEX["ParamBrowLY"], PARAMETER_INDEX["ParamBrowRY"]
    assert torch.equal(flipped["driving_param_mask"][:, right], batch["driving_param_mask"][:, left]), "a mirrored character lacks the mirrored brow"
    assert torch.equal(flipped["source_regions"], augmentation._region_mirror[batch["source_regions"].flip(-1)]), "source maps are mirrored too"


def test_rig_training_on_footage_without_parameters_stops_naming_the_clips(tmp_path):
    root = tmp_path / "footage"
    for character in ("A", "B"):
        frames = np.zeros((4, 32, 32, 4), np.uint8)
        info = ClipInfo(character, "video_000", "video", 0, 30.0, 32, 4, PARAMETER_NAMES, ())
        write_clip(root, info, {"frames": frames, "params": np.full((4, len(PARAMETER_NAMES)), np.nan, np.float32)})
    logs = tmp_path / "logs"
    args = tiny_args(tmp_path, config="rig.yaml", extra=[f"--config={CONFIGS / 'data' / 'live2d.yaml'}", f"--data.init_args.root={root}",
                                                           "--data.init_args.held_out=[B]", "--data.init_args.augmentation=null",
                                                           "--data.init_args.test_mode=self"])
    result = run_cli_process(args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "A/video_000" in result.stderr and "ground-truth parameters" in result.stderr and "Traceback" not in result.stderr
    assert not logs.exists(), "nothing is written before the data is refused"


def test_teacher_forcing_drives_the_backbone_with_the_true_parameters(tmp_path):
    args = tiny_args(tmp_path, config="rig.yaml", extra=["--model.teacher_forcing=true", "--model.backbone.init_args.width=8"])[1:]
    cli = AnimatorCLI(args=args, run=False)
    cli.datamodule.setup("fit")
    model, batch = cli.model, next(iter(cli.datamodule.train_dataloader()))
    seen = []
    generate = model.backbone.generate
    model.backbone.generate = lambda source, m_src, m_drv: seen.append((m_src, m_drv)) or generate(source, m_src, m_drv)
    terms, _ = model.compute_losses(batch)
    size = batch["source"].shape[0]
    m_src, m_drv = seen[0][0][:size], seen[0][1][:size]
    assert torch.allclose(m_drv.vector, normalise_rig_parameters(batch["driving_params"]), atol=1e-6)
    assert torch.allclose(m_src.vector, normalise_rig_parameters(batch["source_params"]), atol=1e-6)
    read = model.descriptor(batch["driving"])
    assert not torch.allclose(read.vector, m_drv.vector, atol=1e-3), "the reading is not what drove the backbone"
    assert terms["descriptor/parameters"] > 0, "the descriptor still learns from its own reading"
    with pytest.raises(UserFacingError, match="teacher_forcing needs a descriptor whose vector is the rig parameters"):
        AnimatorCLI(args=tiny_args(tmp_path, extra=["--model.teacher_forcing=true"])[1:], run=False)
