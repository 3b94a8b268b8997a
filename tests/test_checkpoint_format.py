"""Animator checkpoints are plain data: they load with ``torch.load(weights_only=True)`` and the model is rebuilt from
``class_path``/``init_args``; the older format with a pickled adapter is refused with the way to convert it."""

import lightning
import pytest
import torch

from conftest import run_cli, tiny_args
from core.errors import CheckpointError
from lightning_app.checkpoints import main as convert_main
from modules.adapter import LandmarkAdapter
from modules.animator_checkpoint import convert_checkpoint, load_animator, save_animator


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plain")
    cli = run_cli(tiny_args(tmp, steps=1))
    return tmp, cli.trainer.checkpoint_callback.best_model_path


def with_adapter(path):
    module = load_animator(path)
    module.adapter = LandmarkAdapter(module.descriptor.spec.vector_dim, hidden=32, temporal_window=3, dropout=0.2)
    with torch.no_grad():
        module.adapter.mean.fill_(0.25)  # a buffer set by training (set_statistics), not by the constructor
    return module


def test_an_animator_with_its_adapter_is_saved_as_plain_data_and_rebuilt(trained):
    tmp, path = trained
    module = with_adapter(path)
    save_animator(module, tmp / "adapter.ckpt")
    stored = torch.load(tmp / "adapter.ckpt", map_location="cpu", weights_only=True)["hyper_parameters"]
    assert stored["adapter"] == {"class_path": "modules.adapter.LandmarkAdapter",
                                 "init_args": {"output_dim": module.descriptor.spec.vector_dim, "input_dim": module.adapter.input.in_channels,
                                               "hidden": 32, "temporal_window": 3, "dropout": 0.2}}
    assert stored["descriptor"]["class_path"] == "modules.descriptors.KeypointDescriptor"
    loaded = load_animator(tmp / "adapter.ckpt")
    assert isinstance(loaded.adapter, LandmarkAdapter) and loaded.adapter.temporal_window == 3
    original, rebuilt = module.state_dict(), loaded.state_dict()
    assert original.keys() == rebuilt.keys() and all(torch.equal(original[k], rebuilt[k]) for k in original)
    save_animator(loaded, tmp / "again.ckpt")  # a loaded animator saves as plain data again (AnimatorExport does this)
    assert torch.load(tmp / "again.ckpt", weights_only=True)["hyper_parameters"] == stored


def test_a_module_built_in_code_is_not_saved_with_objects_inside(trained):
    tmp, path = trained
    module = load_animator(path)
    module.hparams["descriptor"] = module.descriptor  # what save_hyperparameters keeps outside cli.py
    with pytest.raises(CheckpointError, match=r"hyper_parameters.descriptor \(KeypointDescriptor\)"):
        save_animator(module, tmp / "objects.ckpt")
    assert not (tmp / "objects.ckpt").exists()


def test_an_old_checkpoint_with_a_pickled_adapter_says_how_to_convert_it_and_converts(trained, capsys):
    tmp, path = trained
    module = with_adapter(path)
    old = tmp / "old.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {**module.hparams, "adapter": module.adapter},
                "pytorch-lightning_version": lightning.__version__}, old)  # as save_animator wrote it before
    with pytest.raises(CheckpointError, match=r"holds pickled objects .* python -m lightning_app.checkpoints .*old.ckpt NEW.ckpt"):
        load_animator(old)
    with pytest.raises(SystemExit):
        convert_main([str(old), str(old)])
    assert "another name" in capsys.readouterr().err
    convert_main([str(old), str(tmp / "new.ckpt")])
    loaded = load_animator(tmp / "new.ckpt")
    assert torch.equal(loaded.adapter.body[-1].weight, module.adapter.body[-1].weight)
    assert torch.equal(loaded.adapter.mean, torch.full_like(loaded.adapter.mean, 0.25))
    torch.save({"state_dict": {}, "hyper_parameters": {**module.hparams, "adapter": torch.nn.Linear(2, 2)}}, old)
    with pytest.raises(CheckpointError, match="Linear, which has no plain-data form"):
        convert_checkpoint(old, tmp / "other.ckpt")
