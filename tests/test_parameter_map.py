"""Relative transfer through the rig parameters: the ridge map from a parameter change to the registration windows'
affines (``modules/parameter_map.py``) and the animator's parameter reader (``model.parameter_reader``)."""

import socket
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import CONFIGS, metric_by_step, run_cli, tiny_args
from core.errors import UserFacingError
from core.vocabulary import PARAMETER_INDEX, PARAMETER_NAMES
from datamodules import PuppetPairs
from modules import AnimatorModule
from modules.animator_checkpoint import load_animator
from modules.backbones import WarpingGenerator
from modules.descriptors import KeypointDescriptor, RigDescriptor
from modules.parameter_map import ParameterAffineMap
from modules.registration import affine_keypoint, warp_affine

P = len(PARAMETER_NAMES)


def linear_motion(changes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Affines ``B×W×2×3`` departing from the identity by ``changes @ weights``."""
    return torch.eye(2, 3) + (changes @ weights).view(len(changes), weights.shape[1] // 6, 2, 3)


def test_the_map_recovers_a_linear_motion_of_the_parameters():
    torch.manual_seed(0)
    weights = 0.1 * torch.randn(P, 2 * 6)
    fit = ParameterAffineMap(P, num_windows=2)
    changes = torch.rand(300, P) * 2 - 1
    fit.observe(changes[:40], linear_motion(changes[:40], weights))
    assert not fit.fitted and torch.equal(fit(changes[:3]), torch.eye(2, 3).expand(3, 2, 2, 3)), "too few pairs: no motion"
    fit.observe(changes[40:], linear_motion(changes[40:], weights))
    assert fit.fitted and float(fit.count) == 300
    new = torch.rand(50, P) * 2 - 1
    error = (fit(new) - linear_motion(new, weights)).abs().max()
    assert error < 0.01 * weights.abs().max(), f"largest error {error:.5f}"
    assert torch.allclose(fit(torch.zeros(4, P)), torch.eye(2, 3).expand(4, 2, 2, 3)), "no change, no motion"
    resumed = ParameterAffineMap(P, num_windows=2)
    resumed.load_state_dict(fit.state_dict())  # the sums are buffers: checkpoints carry the fit
    assert torch.equal(resumed(new), fit(new))
    with pytest.raises(ValueError, match="expected change"):
        fit.observe(changes[:4], torch.eye(2, 3).expand(4, 3, 2, 3))
    with pytest.raises(ValueError, match="ridge must be positive"):
        ParameterAffineMap(P, 2, ridge=0.0)


def rank_changes(rank: int) -> torch.Tensor:
    return torch.rand(40, P, generator=torch.Generator().manual_seed(rank)) * 2 - 1


def observe_in_process_group(rank: int, world: int, address: str, out: str) -> None:
    """One process of :func:`test_the_fit_is_summed_over_processes`: its own pairs, then none (rank 0) or its pairs again."""
    dist.init_process_group("gloo", init_method=address, rank=rank, world_size=world)
    weights = torch.linspace(-0.1, 0.1, P * 6).view(P, 6)
    fit = ParameterAffineMap(P, num_windows=1)
    changes = rank_changes(rank)
    fit.observe(changes, linear_motion(changes, weights))
    again = changes[:0] if rank == 0 else changes  # a process with no pair this step must still take part
    fit.observe(again, linear_motion(again, weights))
    torch.save(fit.state_dict(), f"{out}/{rank}.pt")
    dist.destroy_process_group()


def test_the_fit_is_summed_over_processes(tmp_path):
    """Under DDP every process holds the sums of all processes' pairs, so every copy of the model answers alike."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(observe_in_process_group, args=(2, f"tcp://127.0.0.1:{port}", str(tmp_path)), nprocs=2)
    states = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])
    assert float(states[0]["count"]) == 120
    first, second = rank_changes(0).double(), rank_changes(1).double()
    assert torch.allclose(states[0]["gram"], first.T @ first + 2 * second.T @ second)


@pytest.fixture(scope="module")
def pairs() -> dict[str, torch.Tensor]:
    data = PuppetPairs(list(range(4)), length=4, image_size=64, seed=0)
    items = [data[i] for i in range(4)]
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def make_animator(share: float = 0.5) -> AnimatorModule:
    torch.manual_seed(0)
    return AnimatorModule(descriptor=KeypointDescriptor(num_keypoints=3, width=8, input_size=64, jacobians=True),
                          backbone=partial(WarpingGenerator, width=8, motion_width=8, refine=False), image_size=64,
                          registration=[[0.0, 0.0, 1.0]], registration_transfer="euclidean",
                          parameter_reader=RigDescriptor(input_size=64, keypoint_weight=0.0), parameter_share=share)


def fit_turn_to_shift(animator: AnimatorModule, gain: float) -> None:
    """Fit the animator's map to a motion where ``ParamAngleX`` (normalised) moves the frame by ``gain`` in x."""
    changes = torch.zeros(100, P)
    changes[:, PARAMETER_INDEX["ParamAngleX"]] = torch.linspace(-1, 1, 100)
    weights = torch.zeros(P, 6)
    weights[PARAMETER_INDEX["ParamAngleX"], 2] = gain
    animator.parameter_map.observe(changes, linear_motion(changes, weights))


def test_relative_transfer_blends_the_drivers_registered_change_with_the_parameters(pairs):
    """The registration keypoint of a relative transfer moves by ``(1 − share)·ECC + share·map(reader's change)``: with
    share 0 the reader changes nothing, with share 1 only the parameters count, and where ECC cannot align the
    driver's frames the parameters alone."""
    frames = pairs["source"]
    driving = warp_affine(frames, torch.tensor([[1.0, 0.0, 0.08], [0.0, 1.0, 0.0]]).expand(4, 2, 3))
    animator = make_animator().eval()
    with pytest.warns(UserWarning, match="has seen 0 training pairs"), torch.no_grad():
        animator.registered(animator.describe(driving), driving, frames, transfer=True)
    fit_turn_to_shift(animator, gain=0.3)
    with torch.no_grad():
        motion = animator.describe(driving)
        ecc = animator.registration_affines(driving, frames, "euclidean")[0][:, 0]
        change = animator.parameter_reader(driving).vector - animator.parameter_reader(frames).vector
        by_parameters = animator.parameter_map(change)[:, 0, 0, 2]
        assert torch.allclose(by_parameters, 0.3 * change[:, PARAMETER_INDEX["ParamAngleX"]], atol=1e-3), "the fitted turn"
        for share in (0.0, 0.5, 1.0):
            animator.parameter_share = share
            keypoint = animator.registered(motion, driving, frames, transfer=True).keypoints[:, -1]
            blended = ecc.clone()
            blended[:, 0, 2] = (1 - share) * ecc[:, 0, 2] + share * by_parameters
            assert torch.allclose(keypoint, affine_keypoint(blended)[0][:, 0], atol=1e-5), share
        assert (by_parameters - ecc[:, 0, 2]).abs().min() > 0.01, "the two motions differ, so the blend is seen"
        trained = animator.registered(motion, driving, frames)  # absolute registration (training, self): ECC only
        assert torch.allclose(trained.keypoints[:, -1], affine_keypoint(animator.registration_affines(driving, frames)[0][:, 0])[0][:, 0])
        animator.parameter_share = 0.5
        blank = torch.full_like(frames, 0.5)
        failed = animator.registered(animator.describe(blank), blank, frames, transfer=True).keypoints[:, -1]
        change = animator.parameter_reader(blank).vector - animator.parameter_reader(frames).vector
        assert torch.allclose(failed, affine_keypoint(animator.parameter_map(change)[:, 0])[0][:, 0], atol=1e-5), "ECC failed: the parameters alone"


def test_a_prepared_reference_is_read_once_for_a_stream(pairs):
    """Relative transfer of a stream against ``prepare_reference``: the frames ``animate_frame`` gives with the
    reference's motion and frame, while the reader reads the reference once instead of once a frame."""
    frames = pairs["source"]
    animator = make_animator().eval()
    fit_turn_to_shift(animator, gain=0.3)
    calls = []
    animator.parameter_reader.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    with torch.no_grad():
        portrait = animator.prepare(frames[:1])
        reference = animator.prepare_reference(frames[1:2])
        assert calls == [1] and torch.equal(reference.image, frames[1:2])
        assert torch.equal(reference.parameters, animator.parameter_reader(frames[1:2]).vector)
        for t in (2, 3):
            calls.clear()
            prepared = animator.animate_frame(portrait, frames[t : t + 1], reference)
            assert calls == [1], "the driving frame only"
            calls.clear()
            expected = animator.animate_frame(portrait, frames[t : t + 1], animator.describe(frames[1:2]), reference_frame=frames[1:2])
            assert calls == [1, 1], "the driving frame and the reference again"
            assert torch.allclose(prepared, expected, atol=1e-6), t
            turned = reference.parameters + torch.eye(P)[PARAMETER_INDEX["ParamAngleX"]]
            swapped = animator.animate_frame(portrait, frames[t : t + 1], replace(reference, parameters=turned))
            assert (swapped - expected).abs().mean() > 0.01, "the reference's reading is the one used"


def test_training_fits_the_map_on_own_character_pairs_only_and_trains_the_reader(pairs):
    animator = make_animator().train()
    batch = dict(pairs)
    batch["driving_first"] = torch.cat([batch["source"][:3], batch["source"][3:].flip(-1)])  # item 3: another "character" drives
    terms, _ = animator.compute_losses(batch)
    assert "reader/parameters" in terms and terms["reader/parameters"].requires_grad
    assert float(animator.parameter_map.count) == 3, "the three self pairs (all aligned), not the cross pair"
    gram = animator.parameter_map.gram.clone()
    terms["reader/parameters"].backward()
    assert animator.parameter_reader.parameter_head.weight.grad.abs().sum() > 0
    with torch.no_grad():  # validation: held-out characters never enter the fit
        animator.eval()
        animator.compute_losses(batch)
    assert float(animator.parameter_map.count) == 3 and torch.equal(animator.parameter_map.gram, gram)


def test_the_reader_learns_from_the_frames_as_loaded_not_as_augmented(pairs):
    """An augmented training batch keeps the batch as loaded under ``"unaugmented"`` (``PairDataModule``): the reader
    reads those frames and is scored against their parameters; the generator's terms stay on the augmented ones."""
    animator = make_animator().train()
    loaded = dict(pairs)
    augmented = {**loaded, "source": loaded["source"].flip(-1), "driving": loaded["driving"].flip(-1) * 0.8,
                 "driving_params": -loaded["driving_params"]}
    torch.manual_seed(0)
    terms, _ = animator.compute_losses({**augmented, "unaugmented": loaded})
    animator.eval()
    with torch.no_grad():  # the reader's loss as it would be on each set of frames (eval mode: no batch statistics)
        on_loaded = animator.parameter_reader.auxiliary_losses(loaded["driving"], animator.parameter_reader(loaded["driving"]), loaded)
        on_augmented = animator.parameter_reader.auxiliary_losses(augmented["driving"], animator.parameter_reader(augmented["driving"]), augmented)
    animator.train()
    torch.manual_seed(0)
    plain, _ = animator.compute_losses(dict(loaded))
    assert torch.allclose(terms["reader/parameters"], plain["reader/parameters"]), "the reader saw the loaded frames"
    assert (on_loaded["parameters"] - on_augmented["parameters"]).abs() > 1e-3, "the two sets of frames read differently"
    assert (terms["reconstruction"] - plain["reconstruction"]).abs() > 1e-4, "the generator trains on the augmented frames"


def test_a_parameter_reader_needs_registration_a_parameter_descriptor_and_a_share_in_range():
    reader = RigDescriptor(input_size=64, keypoint_weight=0.0)
    common = dict(backbone=WarpingGenerator, image_size=64)
    with pytest.raises(UserFacingError, match="parameter_reader needs model.registration"):
        AnimatorModule(descriptor=KeypointDescriptor(num_keypoints=3, jacobians=True), parameter_reader=reader, **common)
    with pytest.raises(UserFacingError, match="parameter_reader needs model.registration"):
        AnimatorModule(descriptor=KeypointDescriptor(num_keypoints=3, jacobians=True), registration=[[0.0, 0.0, 1.0]],
                       parameter_reader=KeypointDescriptor(num_keypoints=3), **common)
    with pytest.raises(UserFacingError, match=r"parameter_share must lie in \[0, 1\]"):
        AnimatorModule(descriptor=KeypointDescriptor(num_keypoints=3, jacobians=True), registration=[[0.0, 0.0, 1.0]],
                       parameter_reader=reader, parameter_share=1.5, **common)


def test_the_parameter_reader_config_trains_from_the_cli_and_saves_the_fit(tmp_path):
    extra = [f"--config={CONFIGS / 'backbone' / 'warping.yaml'}", f"--config={CONFIGS / 'registration.yaml'}",
             f"--config={CONFIGS / 'parameter_reader.yaml'}"]
    cli = run_cli(tiny_args(tmp_path, steps=2, extra=extra))
    assert isinstance(cli.model.parameter_reader, RigDescriptor) and cli.model.parameter_share == 0.5 and cli.model.needs_parameters
    readings = metric_by_step(Path(cli.trainer.log_dir), "train/reader/parameters")
    assert len(readings) == 2 and all(value > 0 for value in readings.values())
    path = next(Path(cli.trainer.log_dir).rglob("*.ckpt"))
    count = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]["parameter_map.count"]
    assert count > 0, "the map's sums travel with the checkpoint"
    animator = load_animator(path)  # rebuilt from plain data, reader included
    assert isinstance(animator.parameter_reader, RigDescriptor) and torch.equal(animator.parameter_map.count, count)
