"""Driving an anime portrait: MediaPipe face features, the adapter trained on Live2D renders and on human poses
rendered on Live2D characters, and the animate command end to end on a shared human driving video (skipped where
the shared material is absent)."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import CONFIGS, read_metrics, run_cli, tiny_args
from core.errors import CheckpointError
from core.vocabulary import FEATURE_DIM, PARAMETER_INDEX, default_parameters, parameters_from_mapping
from datamodules.face_landmarks import (LEFT_EYE, RIGHT_EYE, FaceTracker, face_measures, geometric_parameters, landmark_features,
                                        neutral_measures, normalised_landmarks, parameters_from_measures)
from lightning_app.animate import animate, main as animate_main
from lightning_app.render import render_dataset
from lightning_app.train_adapter import AdapterCLI, main as train_adapter_main
from modules.adapter_losses import CycleMaps
from modules.animator_checkpoint import load_animator
from test_live2d import MODELS, SHARED, model, needs_models

LANDMARKER = SHARED / "mediapipe" / "face_landmarker.task"
HUMAN_VIDEO = SHARED / "driving" / "d0.mp4"
needs_mediapipe = pytest.mark.skipif(not LANDMARKER.is_file() or not HUMAN_VIDEO.is_file(),
                                     reason=f"MediaPipe bundle or driving videos not found under {SHARED} (set ANIME_SHARED_DIR)")


def human_frames(count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(HUMAN_VIDEO))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        assert ok, f"{HUMAN_VIDEO} has fewer than {count} frames"
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return frames


@pytest.fixture(scope="module")
def animator(tmp_path_factory) -> Path:
    """A keypoints animator trained for a few steps on 64² puppets."""
    root = tmp_path_factory.mktemp("animator")
    run_cli(tiny_args(root, steps=2))
    return next(root.glob("logs/run/version_0/checkpoints/last.ckpt"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    if not (MODELS / "Hiyori").is_dir():
        pytest.skip(f"Live2D sample models not found under {MODELS}")
    out = tmp_path_factory.mktemp("clips")
    render_dataset(MODELS, out, size=256, clips=1, replays=0, frames=16, workers=2, characters=["Hiyori", "Haru"])
    return out


@needs_mediapipe
def test_face_features_of_a_human_video():
    tracker = FaceTracker(LANDMARKER, video=True)
    faces = [tracker(frame) for frame in human_frames(8)]
    tracker.close()
    assert sum(f is not None for f in faces) >= 6
    face = next(f for f in faces if f is not None)
    assert face.landmarks.shape == (478, 3) and face.blendshapes.shape == (52,) and face.matrix.shape == (4, 4)
    points = normalised_landmarks(face.landmarks)
    eyes = [(points[e["outer"], :2] + points[e["inner"], :2]) / 2 for e in (RIGHT_EYE, LEFT_EYE)]
    assert np.allclose(eyes[0], [-0.5, 0.0], atol=1e-4) and np.allclose(eyes[1], [0.5, 0.0], atol=1e-4)
    assert landmark_features(face).shape == (FEATURE_DIM,)
    assert np.allclose(geometric_parameters(face, face_measures(face)), default_parameters(), atol=1e-5), "a resting face is the neutral pose"


@needs_mediapipe
@needs_models
def test_geometric_parameters_follow_the_rig_on_live2d_renders():
    from datamodules.live2d.render_process import render_in_subprocess
    from core.frames import composite

    poses = np.stack([default_parameters(), parameters_from_mapping({"ParamAngleX": 25.0}), parameters_from_mapping({"ParamAngleX": -25.0}),
                      parameters_from_mapping({"ParamEyeLOpen": 0.0, "ParamEyeROpen": 0.0})])
    frames = render_in_subprocess(model("Haru"), poses, size=256).frames
    tracker = FaceTracker(LANDMARKER, min_detection=0.3, min_presence=0.0)
    faces = [tracker(composite(f, (255, 255, 255))) for f in frames]
    tracker.close()
    assert all(f is not None for f in faces), "MediaPipe finds the anime face at a low presence threshold"
    neutral = face_measures(faces[0])
    x = PARAMETER_INDEX["ParamAngleX"]
    right, left = geometric_parameters(faces[1], neutral)[x], geometric_parameters(faces[2], neutral)[x]
    assert right > 3 and left < -3, f"head turns read back with Live2D's sign: {right:.1f}, {left:.1f}"
    assert face_measures(faces[3])["eye_left"] < 0.7 * neutral["eye_left"], "closed eyes have a smaller aspect ratio"


def adapter_args(animator: Path, root: Path, *extra: str, steps: int = 300) -> list[str]:
    """``lightning_app.train_adapter fit`` arguments for a short run that logs to CSV under ``root/logs``."""
    return ["fit", f"--model.animator={animator}", f"--data.landmarker={LANDMARKER}", "--trainer.logger=CSVLogger",
            f"--trainer.logger.save_dir={root / 'logs'}", "--trainer.logger.name=adapter", f"--trainer.max_steps={steps}",
            f"--trainer.val_check_interval={steps}", "--trainer.enable_progress_bar=false", *extra]


@needs_mediapipe
@needs_models
def test_adapter_trains_on_both_routes_and_drives_from_a_human_video(animator, clips, tmp_path, capsys):
    cache = tmp_path / "human_pairs"
    routes = [f"--config={CONFIGS / 'adapter' / 'live2d.yaml'}", f"--config={CONFIGS / 'adapter' / 'human.yaml'}",
              f"--data.clips={clips}", "--data.held_out=[Haru]", f"--data.videos=[{HUMAN_VIDEO}]", "--data.held_out_videos=[]",
              f"--data.models={MODELS}", "--data.characters=[Hiyori]", f"--data.cache={cache}", "--data.max_video_frames=16",
              "--data.batch_size=16"]
    cli = AdapterCLI(args=adapter_args(animator, tmp_path, *routes))
    report, data = cli.model.report, cli.datamodule
    assert min(data.face_rates().values()) > 0.8 and set(data.face_rates()) == {"live2d", "human"}
    assert report["live2d/train"]["r2"] > 0.0 and report["live2d/val"]["frames"] > 0, "Haru's clip is validation only"
    assert report["human/train"]["frames"] >= 12 and -1 <= report["human/train"]["r_AngleX"] <= 1
    assert "live2d/train" in capsys.readouterr().out, "the report is printed"
    metrics = read_metrics(tmp_path / "logs" / "adapter" / "version_0")
    assert any("live2d_val/r2_rel" in row for row in metrics) and any("train/contrastive" in row for row in metrics)
    assert (clips / "Hiyori" / "random_000" / "mediapipe_features.npy").is_file(), "features are cached beside the clip"
    render = cache / HUMAN_VIDEO.stem / "Hiyori" / "human"
    params = np.load(render / "params.npy")
    assert params.shape[0] >= 12 and params.std(0)[PARAMETER_INDEX["ParamAngleX"]] > 0, "the human's head motion is rendered"
    assert not (cache / HUMAN_VIDEO.stem / "Haru").exists(), "held-out characters are not rendered with human poses"
    written = (render / "clip.json").stat().st_mtime_ns
    untrained = AdapterCLI(args=adapter_args(animator, tmp_path / "again", *routes, steps=1)).model.report
    assert (render / "clip.json").stat().st_mtime_ns == written, "a second run reuses the cached render"
    assert untrained["live2d/train"]["r2"] < report["live2d/train"]["r2"], "training fits the training pairs"

    with_adapter = tmp_path / "logs" / "adapter" / "version_0" / "animator.ckpt"
    assert with_adapter.is_file(), "the animator with its adapter is exported into the run folder"
    portrait = tmp_path / "portrait.png"
    cv2.imwrite(str(portrait), np.full((80, 64, 3), 200, np.uint8))
    out = tmp_path / "animated.mp4"
    result = animate(with_adapter, portrait, str(HUMAN_VIDEO), out, landmarker=LANDMARKER, max_frames=12, side_by_side=True)
    assert result["frames"] == 12 and result["faces"] >= 10 and result["fps"] > 0
    video = cv2.VideoCapture(str(out))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 12 and int(video.get(cv2.CAP_PROP_FRAME_WIDTH)) == 3 * 64


@needs_mediapipe
@needs_models
def test_adapter_training_resumes_from_its_last_checkpoint(animator, clips, tmp_path):
    live2d = [f"--config={CONFIGS / 'adapter' / 'live2d.yaml'}", f"--data.clips={clips}", "--data.held_out=[Haru]", "--data.batch_size=8",
              "--model.window=2"]
    first = AdapterCLI(args=adapter_args(animator, tmp_path, *live2d, steps=4))
    statistics = first.model.adapter.input_mean.clone()
    resumed = AdapterCLI(args=adapter_args(animator, tmp_path, *live2d, "--ckpt_path=last", steps=8))
    assert resumed.trainer.global_step == 8 and resumed.datamodule.window == 2, "the data's window follows the model's"
    assert torch.equal(resumed.model.adapter.input_mean, statistics)
    with pytest.raises(CheckpointError, match="model.window: checkpoint 2, requested 3"):
        AdapterCLI(args=adapter_args(animator, tmp_path, *live2d, "--model.window=3", "--ckpt_path=last", steps=12))
    with pytest.raises(CheckpointError, match="is an adapter training checkpoint.*animator.ckpt in that run's folder"):
        load_animator(tmp_path / "logs" / "adapter" / "version_0" / "checkpoints" / "last.ckpt")


def test_adapter_config_prints_without_the_linked_target_space(animator, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_adapter_main(["fit", f"--config={CONFIGS / 'adapter' / 'live2d.yaml'}", f"--model.animator={animator}",
                            "--data.landmarker=face_landmarker.task", "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "datamodules.AdapterPairDataModule" in printed and "clips: data/live2d" in printed and "window: 1" in printed
    assert "target_space" not in printed, "the model is linked in when the classes are built, not configured"


def test_adapter_needs_pairs_and_models(animator, tmp_path, capsys):
    def fails(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            train_adapter_main(adapter_args(animator, tmp_path, *args))
        assert exit_info.value.code == 2
        return capsys.readouterr().err

    assert "give training pairs" in fails()
    assert "data.videos needs data.models" in fails(f"--data.videos=[{HUMAN_VIDEO}]")
    assert f"not found: data.clips {str(tmp_path / 'none')!r}" in fails(f"--data.clips={tmp_path / 'none'}")
    assert "missing.ckpt" in fails(f"--model.animator={tmp_path / 'missing.ckpt'}", f"--data.clips={tmp_path}")
    assert not (tmp_path / "logs").exists(), "nothing is written before the settings are checked"
    with pytest.raises(SystemExit):
        train_adapter_main(["--animator", str(animator), "--out", "a.ckpt"])
    assert "--animator → --model.animator; --out → nothing: the run folder's animator.ckpt" in capsys.readouterr().err, "the old flags are translated"


def test_cycle_maps_keep_descriptors_that_a_pose_explains():
    generator = torch.Generator().manual_seed(0)
    poses = torch.rand(400, 5, generator=generator)
    mixing = torch.randn(5, 12, generator=generator)
    descriptors = poses @ mixing + 0.01 * torch.randn(400, 12, generator=generator)
    maps = CycleMaps(descriptors, poses)
    assert torch.allclose(maps.parameters(descriptors), poses, atol=0.05), "descriptor → parameters recovers the poses"
    assert maps.cycle_loss(descriptors) < 1e-3
    off_manifold = descriptors + torch.randn(400, 12, generator=generator)
    assert maps.cycle_loss(off_manifold) > 100 * maps.cycle_loss(descriptors)


def test_adapter_standardises_inputs_and_outputs():
    from modules.adapter import LandmarkAdapter

    torch.manual_seed(0)
    features, targets = torch.randn(50, 4, 6), 3.0 + 0.5 * torch.randn(50, 5)
    adapter = LandmarkAdapter(5, input_dim=6, hidden=8, temporal_window=4).eval()
    adapter.set_statistics(features, targets)
    scaled = features * torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 100.0]) + 7.0  # one signal in other units
    rescaled = LandmarkAdapter(5, input_dim=6, hidden=8, temporal_window=4).eval()
    rescaled.load_state_dict(adapter.state_dict())
    rescaled.set_statistics(scaled, targets)
    assert torch.allclose(adapter(features), rescaled(scaled), atol=1e-5), "the units of an input do not matter"
    assert torch.allclose(adapter.standardise(targets).mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(adapter.standardise(targets).std(0), torch.ones(5), atol=1e-5)


def test_human_parameters_are_relative_to_the_median_face():
    rest = {"yaw": 5.0, "pitch": -3.0, "roll": 1.0, "eye_right": 0.3, "eye_left": 0.32, "iris_x": 0.0, "iris_y": 0.0,
            "mouth_open": 0.02, "mouth_width": 0.9, "brow_right": 0.4, "brow_left": 0.41}
    turned = rest | {"yaw": 25.0, "mouth_open": 0.3}
    neutral = neutral_measures([rest, turned, rest])
    assert neutral == rest, "the median ignores the moments the person moves"
    assert np.allclose(parameters_from_measures(rest, neutral), default_parameters())
    moved = parameters_from_measures(turned, neutral)
    assert moved[PARAMETER_INDEX["ParamAngleX"]] == 20.0 and moved[PARAMETER_INDEX["ParamMouthOpenY"]] > 0.5


@needs_mediapipe
def test_human_neutral_pose_is_the_median_of_the_first_faces(animator):
    from lightning_app.animate import HumanMotion
    from modules.adapter import LandmarkAdapter

    module = load_animator(animator)
    module.adapter = LandmarkAdapter(module.descriptor.spec.vector_dim).eval()
    human = HumanMotion(module, LANDMARKER, fps=25.0, neutral_frames=3)
    frames = human_frames(6)
    outputs = [human(frame).vector for frame in frames]
    human.tracker.close()
    assert human.faces == 6, "d0's first frames all show the face"
    expected = torch.cat(outputs[:3]).median(0).values
    assert torch.allclose(human.reference().vector[0], expected), "later frames do not move the rest pose"
    assert not torch.allclose(expected, outputs[0][0]), "the rest pose is not simply the first frame's"


@needs_models
def test_anime_frames_drive_the_animator_directly(animator, clips, tmp_path):
    frames = np.load(next(clips.glob("Hiyori/*/frames.npy")), mmap_mode="r")
    folder = tmp_path / "driving"
    folder.mkdir()
    for t in range(6):
        cv2.imwrite(str(folder / f"{t:03d}.png"), cv2.cvtColor(np.ascontiguousarray(frames[t, ..., :3]), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "portrait.png"), np.ascontiguousarray(frames[0, ..., 2::-1]))
    out = tmp_path / "anime.mp4"
    result = animate(animator, tmp_path / "portrait.png", str(folder), out)
    assert result["frames"] == 6
    assert int(cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT)) == 6


def test_commands_do_not_load_live2d_in_the_parent_process():
    """Live2D (and its GL context) belongs in spawned rendering workers only."""
    import subprocess
    import sys

    from conftest import ROOT

    code = "import sys, lightning_app.train_adapter, lightning_app.animate; print('live2d' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def test_bad_inputs_are_named(animator, tmp_path, capsys):
    def fails(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            animate_main(["--out", str(tmp_path / "x.mp4"), *args])
        assert exit_info.value.code == 2
        return capsys.readouterr().err

    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert "cannot read the portrait image" in fails("--checkpoint", str(animator), "--portrait", str(tmp_path / "broken.png"), "--driving", "x.mp4")
    cv2.imwrite(str(tmp_path / "p.png"), np.zeros((32, 32, 3), np.uint8))
    assert "does not exist" in fails("--checkpoint", str(animator), "--portrait", str(tmp_path / "p.png"), "--driving", str(tmp_path / "missing.mp4"))
    assert "has no adapter" in fails("--checkpoint", str(animator), "--portrait", str(tmp_path / "p.png"), "--driving", str(tmp_path),
                                     "--driver", "human", "--landmarker", str(tmp_path / "p.png"))
    torch_file = tmp_path / "other.ckpt"
    import torch

    torch.save({"state_dict": {}, "hyper_parameters": {"encoder": "resnet10t"}}, torch_file)
    assert "is an evaluator checkpoint; an animator checkpoint is needed" in fails("--checkpoint", str(torch_file), "--portrait", str(tmp_path / "p.png"), "--driving", str(tmp_path))
    torch.save({"state_dict": {}, "hyper_parameters": {"width": 3}}, torch_file)
    assert "not an AnimatorModule checkpoint" in fails("--checkpoint", str(torch_file), "--portrait", str(tmp_path / "p.png"), "--driving", str(tmp_path))
    assert "no camera at index 7" in fails("--checkpoint", str(animator), "--portrait", str(tmp_path / "p.png"), "--driving", "7")


@needs_mediapipe
def test_a_video_without_a_face_is_reported(animator, tmp_path, capsys):
    from modules.animator_checkpoint import save_animator
    from modules.adapter import LandmarkAdapter

    module = load_animator(animator)
    module.adapter = LandmarkAdapter(module.descriptor.spec.vector_dim)
    save_animator(module, tmp_path / "adapter.ckpt")
    blank = tmp_path / "blank.mp4"
    writer = cv2.VideoWriter(str(blank), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 64))
    for _ in range(5):
        writer.write(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    writer.release()
    cv2.imwrite(str(tmp_path / "p.png"), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(SystemExit):
        animate_main(["--checkpoint", str(tmp_path / "adapter.ckpt"), "--portrait", str(tmp_path / "p.png"), "--driving", str(blank),
                      "--out", str(tmp_path / "o.mp4"), "--landmarker", str(LANDMARKER)])
    assert "no face found in any frame" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists(), "nothing half-written is left"


@needs_mediapipe
def test_a_rig_animator_is_driven_by_the_faces_geometry_without_an_adapter(tmp_path):
    from lightning_app.animate import HumanMotion
    from modules.descriptors.rig import normalise_rig_parameters

    run_cli(tiny_args(tmp_path, config="rig.yaml", steps=1, extra=["--model.backbone.init_args.width=8"]))
    checkpoint = next(tmp_path.glob("logs/run/version_0/checkpoints/last.ckpt"))
    module = load_animator(checkpoint)
    assert module.adapter is None
    human = HumanMotion(module, LANDMARKER, fps=25.0, neutral_frames=3)
    frames = human_frames(8)
    vectors = torch.cat([human(frame).vector for frame in frames])
    human.tracker.close()
    tracker = FaceTracker(LANDMARKER, video=True, fps=25.0)
    measures = [face_measures(tracker(frame)) for frame in frames]
    tracker.close()
    expected = normalise_rig_parameters(torch.from_numpy(parameters_from_measures(measures[7], neutral_measures(measures[:3]))))
    assert torch.allclose(vectors[7], expected, atol=1e-5), "the face's parameters relative to its first faces' median"
    assert torch.equal(human.reference().vector[0], normalise_rig_parameters(torch.from_numpy(default_parameters())))
    assert vectors.abs().max() <= 1.0 and not torch.allclose(vectors[3], vectors[7]), "the rig follows the face"
    cv2.imwrite(str(tmp_path / "p.png"), np.full((64, 64, 3), 200, np.uint8))
    result = animate(checkpoint, tmp_path / "p.png", str(HUMAN_VIDEO), tmp_path / "rig.mp4", driver="human", landmarker=LANDMARKER, max_frames=6)
    assert result["frames"] == 6 and result["faces"] == 6
