"""Plain footage (video file or image folder) imported as clips without ground truth."""

import cv2
import numpy as np
import pytest
import torch

from datamodules.live2d.clips import index_clips
from datamodules.live2d_datamodule import Live2DClipPairs
from lightning_app.import_video import import_clip, main as import_main


def moving_square(frames: int = 12, size: tuple[int, int] = (96, 64)) -> list[np.ndarray]:
    width, height = size
    out = []
    for t in range(frames):
        image = np.full((height, width, 3), 255, np.uint8)
        cv2.rectangle(image, (10 + 4 * t, 20), (30 + 4 * t, 40), (200, 30, 30), -1)
        out.append(image)
    return out


def test_video_and_image_folder_become_clips_that_pairs_can_use(tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 24.0, (96, 64))
    for frame in moving_square():
        writer.write(frame)
    writer.release()
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, frame in enumerate(moving_square(5)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    data = tmp_path / "data"
    import_clip(video, data, "Recorded", size=32)
    import_clip(folder, data, "Recorded", size=32, name="pngs", box=(0, 0, 64))
    clips, bad = index_clips(data)
    assert bad == [] and sorted(c.name for c in clips) == ["pngs", "video_clip"]
    video_clip = next(c for c in clips if c.name == "video_clip")
    assert video_clip.frames == 12 and video_clip.fps == pytest.approx(24.0) and video_clip.source == "video"
    assert set(video_clip.missing) == set(video_clip.parameter_names)
    pairs = Live2DClipPairs(clips, ["Recorded"], 4, 32, "self", max_gap=5, background=(255, 255, 255), seed=0)
    item = pairs[0]
    assert item["source"].shape == (3, 32, 32) and torch.isnan(item["source_params"]).all()
    frames = np.load(data / "Recorded" / "video_clip" / "frames.npy")
    assert (frames[..., 3] == 255).all() and not np.array_equal(frames[0], frames[-1])


def test_unreadable_inputs_are_named(tmp_path, capsys):
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    for source, expected in ((tmp_path / "broken.mp4", "not a readable video"), (tmp_path / "none.mp4", "does not exist"), (tmp_path, "holds no images")):
        with pytest.raises(SystemExit):
            import_main(["--input", str(source), "--character", "X", "--out", str(tmp_path / "out")])
        assert expected in capsys.readouterr().err
