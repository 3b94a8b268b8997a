"""The linear probes behind the descriptor benchmark, and the benchmark command on puppet data."""

import json

import torch

from conftest import CONFIGS
from lightning_app.descriptor_benchmark import main as benchmark_main
from modules.probes import centre_by_group, identity_leakage, ridge_probe


def test_ridge_probe_finds_linear_content_and_nothing_in_noise():
    torch.manual_seed(0)
    weights = torch.randn(16, 3)
    x_train, x_test = torch.randn(400, 16), torch.randn(200, 16)
    y_train, y_test = x_train @ weights + 0.05 * torch.randn(400, 3), x_test @ weights + 0.05 * torch.randn(200, 3)
    groups = torch.arange(400) % 8
    r2, _ = ridge_probe(x_train, y_train, groups, x_test, y_test)
    assert (r2 > 0.98).all()
    noise, _ = ridge_probe(torch.randn(400, 16), y_train, groups, torch.randn(200, 16), y_test)
    assert (noise < 0.1).all()
    y_test[:, 1] = 0.5
    assert torch.isnan(ridge_probe(x_train, y_train, groups, x_test, y_test)[0][1]), "a constant target has no R²"


def test_centring_by_character_removes_identity_offsets():
    torch.manual_seed(0)
    groups = torch.arange(300) % 6
    offsets = 10 * torch.randn(6, 4)
    motion = torch.randn(300, 4)
    x = motion + offsets[groups]
    assert torch.allclose(centre_by_group(x, groups), centre_by_group(motion, groups), atol=1e-4)
    train, test = groups < 4, groups >= 4
    y = motion[:, :2]
    r2_raw, _ = ridge_probe(x[train], y[train], groups[train], x[test], y[test])
    r2_centred, _ = ridge_probe(centre_by_group(x[train], groups[train]), y[train], groups[train], centre_by_group(x[test], groups[test]), y[test])
    assert (r2_centred > 0.9).all() and (r2_centred > r2_raw).all()


def test_identity_leakage_separates_identity_codes_from_noise():
    torch.manual_seed(0)
    identities = torch.arange(200) % 5 + 100
    codes = torch.nn.functional.one_hot(identities - 100, 5).float() + 0.1 * torch.randn(200, 5)
    accuracy, chance = identity_leakage(codes, identities)
    assert accuracy == 1.0 and abs(chance - 0.2) < 1e-6
    accuracy, _ = identity_leakage(torch.randn(200, 5), identities)
    assert accuracy < 0.45


def test_benchmark_command_prints_the_table_and_writes_json(tmp_path, capsys):
    dino = tmp_path / "dino.yaml"
    dino.write_text("model:\n  descriptor:\n    class_path: modules.descriptors.ViTDescriptor\n    init_args: {pretrained: false, input_size: 28, grid: 2}\n")
    benchmark_main([
        f"--config={CONFIGS / 'benchmarks' / 'descriptors.yaml'}", "--data.init_args.num_workers=0", "--frames=64", f"--out={tmp_path}",
        f"--descriptors=[{CONFIGS / 'keypoints.yaml'}, vit={dino}]",
    ])
    printed = capsys.readouterr().out
    assert "keypoints" in printed and "vit" in printed and "mean R² centred" in printed
    rows = json.loads((tmp_path / "descriptor_benchmark.json").read_text())
    assert [r["descriptor"] for r in rows] == ["keypoints", "vit"] and rows[1]["dim"] == 384 * 4
    assert set(rows[0]["r2"]) >= {"ParamAngleX", "ParamMouthOpenY"} and 0 <= rows[0]["identity_accuracy"] <= 1
    assert list(tmp_path.glob("events.out.tfevents.*")), "numbers are logged to TensorBoard too"
