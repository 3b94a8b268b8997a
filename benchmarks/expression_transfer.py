"""Does a learned expression change carry over to characters never trained on?

    python benchmarks/expression_transfer.py --data data/live2d        # eyes, then the mouth: 150 s each at 64²

The quality benchmark shows animators that keep the portrait's eyes open where the target closes them. This probe
asks why, on one local task with nothing else to learn: a small synthesiser (:class:`PatchSynthesiser`) gets a patch
of a clip's first frame centred on an eye (or the mouth) and that part's opening in the first frame and in frame
``t``, and draws the part as it is in frame ``t`` (the patch of frame ``t`` centred on its own landmark, so that
only the expression differs, up to the head's rotation). Eyes share one synthesiser: the character's right eye (on
the image's left) is mirrored.

It trains on the training characters' clips, except the last ``--probe-clips`` of each, for ``--budget`` seconds
per part, and is scored against the copy (output = the first frame's patch), over all items and over those whose
opening changes by at least 0.5:

* on the training characters' held-back clips — characters it learned from, frames it never saw;
* on each ``--held-out`` character — characters it never saw.

Where the first gain is large and the second is not, the synthesis was learned and does not transfer: the
training characters are too few for it, and a bigger animator or a longer budget will not close a new character's
eyes. Landmarks and openings are the data's ground truth (clips without keypoints are left out).

Writes ``expression_transfer.json`` and ``patches_<part>.png`` (per held-out character the three items whose
opening changes most: first frame | synthesised | frame ``t``) into ``--out``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting threads distort timings on shared cores

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import timedelta  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from kornia.geometry.transform import crop_and_resize  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.errors import UserFacingError, exit_on_user_error  # noqa: E402
from core.files import atomic_open, atomic_write_text  # noqa: E402
from core.vocabulary import KEYPOINT_NAMES, PARAMETER_INDEX  # noqa: E402
from datamodules.live2d.clips import ClipInfo, index_clips  # noqa: E402
from datamodules.live2d_datamodule import DEFAULT_HELD_OUT, ClipFrames  # noqa: E402

BIG_CHANGE = 0.5
"""Items whose opening changes by at least this much (of the parameter's range 0…1) are scored apart."""


@dataclass(frozen=True)
class Part:
    """A face part: per instance the landmarks whose mean is its centre, its opening parameter (``0…1``) and
    whether its patch is mirrored (so that both eyes look like the character's left one)."""

    landmarks: tuple[tuple[str, ...], ...]
    openings: tuple[str, ...]
    mirrored: tuple[bool, ...]


PARTS = {
    "eyes": Part((("left_eye",), ("right_eye",)), ("ParamEyeLOpen", "ParamEyeROpen"), (False, True)),
    "mouth": Part((("mouth_left", "mouth_right", "mouth_top", "mouth_bottom"),), ("ParamMouthOpenY",), (False,)),
}


def crop_patches(images: Tensor, centres: Tensor, side: int, mirrored: Tensor) -> Tensor:
    """Square patches of ``images`` ``B×C×H×W`` centred on ``centres`` ``B×2`` (pixels, x right and y down, origin
    at the top-left pixel's corner: the keypoints' convention), ``side`` pixels wide and sampled one to one
    (bilinear, zeros outside the image); rows where ``mirrored`` ``B`` (bool) is set are flipped left to right.
    Returns ``B×C×side×side``."""
    centre = centres - 0.5  # kornia's pixel coordinates: pixel centres at integers
    half = (side - 1) / 2
    offsets = torch.tensor([[-half, -half], [half, -half], [half, half], [-half, half]], dtype=images.dtype, device=images.device)
    patches = crop_and_resize(images, centre[:, None] + offsets, (side, side))
    return torch.where(mirrored[:, None, None, None], patches.flip(-1), patches)


@dataclass
class PartItems:
    """Every scored item of a part in a set of clips: ``source`` and ``target`` patches ``N×3×S×S`` (the clip's first
    frame at its landmark, frame ``t`` at its own), ``openings`` ``N×2`` (first frame, frame ``t``) and the
    ``characters`` (``N`` names)."""

    source: Tensor
    target: Tensor
    openings: Tensor
    characters: list[str]


def part_items(reader: ClipFrames, clips: list[int], parts: dict[str, Part], side: int) -> dict[str, PartItems]:
    """The items of each of ``parts`` in ``clips`` (indices into the reader's clips), every clip read once: frames
    ``t ≥ 1`` of each clip against its first, one item per instance; items where either opening is unknown (the
    character lacks it) are left out."""
    found: dict[str, dict[str, list]] = {name: {"source": [], "target": [], "openings": [], "characters": []} for name in parts}
    for clip in clips:
        info = reader.clips[clip]
        frames = [reader.frame(clip, t) for t in range(info.frames)]
        images = torch.stack([f["image"] for f in frames])
        keypoints = torch.stack([f["keypoints"] for f in frames])
        for name, part in parts.items():
            for landmarks, parameter, mirrored in zip(part.landmarks, part.openings, part.mirrored):
                index = PARAMETER_INDEX[parameter]
                opening = torch.stack([torch.where(f["param_mask"][index], f["params"][index], torch.nan) for f in frames])
                known = opening.isfinite() & opening[0].isfinite()
                known[0] = False
                count = int(known.sum())
                if not count:
                    continue
                centres = keypoints[:, [KEYPOINT_NAMES.index(n) for n in landmarks]].mean(1)
                patches = crop_patches(images, centres, side, torch.full((info.frames,), mirrored))
                lists = found[name]
                lists["source"].append(patches[:1].expand(count, -1, -1, -1))
                lists["target"].append(patches[known])
                lists["openings"].append(torch.stack([opening[0].expand(count), opening[known]], 1))
                lists["characters"] += [info.character] * count
    empty = {"source": [torch.empty(0, 3, side, side)], "target": [torch.empty(0, 3, side, side)], "openings": [torch.empty(0, 2)]}
    return {name: PartItems(*(torch.cat(lists[key] or empty[key]) for key in ("source", "target", "openings")), lists["characters"])
            for name, lists in found.items()}


class PatchSynthesiser(nn.Module):
    """A part's patch ``B×3×S×S`` in ``[0, 1]`` and its openings ``B×2`` (first frame, wanted) → the patch with the
    wanted opening: ``source + alpha·change``, ``alpha`` (a sigmoid) and ``change`` from a two-level convolutional
    net that sees the patch, the openings (as constant channels, at both levels) and the pixel coordinates. Its
    last layer starts at zero, so the untrained synthesiser returns the copy. Any ``S``: the coarse level (half the
    size, rounded up) is resized back."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        inputs = 3 + 2 + 2
        self.fine = nn.Sequential(nn.Conv2d(inputs, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1), nn.SiLU())
        self.coarse = nn.Sequential(nn.Conv2d(width + 2, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
                                    nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.SiLU())
        self.head = nn.Sequential(nn.Conv2d(3 * width, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, 4, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, patch: Tensor, openings: Tensor) -> Tensor:
        batch, _, height, width = patch.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height, device=patch.device), torch.linspace(-1, 1, width, device=patch.device), indexing="ij")
        coordinates = torch.stack([xs, ys])[None].expand(batch, -1, -1, -1)
        fine = self.fine(torch.cat([patch, openings[:, :, None, None].expand(-1, -1, height, width), coordinates], 1))
        coarse = self.coarse(torch.cat([fine, openings[:, :, None, None].expand(-1, -1, height, width)], 1))
        out = self.head(torch.cat([fine, F.interpolate(coarse, size=(height, width), mode="nearest")], 1))
        return patch + torch.sigmoid(out[:, 3:] - 2.0) * out[:, :3]


def train_synthesiser(items: PartItems, budget: float, batch: int, label: str, remaining_after: float) -> tuple[PatchSynthesiser, int]:
    """A :class:`PatchSynthesiser` fitted by L1 on random batches of ``items`` for ``budget`` seconds; progress lines
    every 30 s (with the whole job's ETA: ``remaining_after`` seconds follow this part). Returns it and its steps."""
    model = PatchSynthesiser()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    start, steps, report = time.monotonic(), 0, 30.0
    while (elapsed := time.monotonic() - start) < budget:
        chosen = torch.randint(len(items.characters), (batch,))
        loss = (model(items.source[chosen], items.openings[chosen]) - items.target[chosen]).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        if elapsed >= report:
            eta = timedelta(seconds=round(budget - elapsed + remaining_after))
            print(f"{label}: step {steps}, {elapsed:.0f}/{budget:.0f} s, loss {loss.item():.4f}; job ETA {eta}", flush=True)
            report += 30.0
    return model, steps


@torch.inference_mode()
def score(model: PatchSynthesiser, items: PartItems, groups: dict[str, list[str]]) -> tuple[dict[str, dict], Tensor]:
    """Per group (a name → its characters): items, the copy's and the synthesiser's mean L1, over all items and over
    big changes. Also returns the synthesised patches."""
    output = torch.cat([model(s, o) for s, o in zip(items.source.split(256), items.openings.split(256))]).clamp(0, 1)
    synthesised = (output - items.target).abs().mean((1, 2, 3))
    copied = (items.source - items.target).abs().mean((1, 2, 3))
    big = (items.openings[:, 0] - items.openings[:, 1]).abs() >= BIG_CHANGE
    rows = {}
    for name, characters in groups.items():
        chosen = torch.tensor([c in characters for c in items.characters], dtype=torch.bool)
        row = {}
        for subset, mask in (("all", chosen), ("big", chosen & big)):
            count = int(mask.sum())
            row[subset] = {"items": count, "copy": float(copied[mask].mean()) if count else float("nan"),
                           "synthesised": float(synthesised[mask].mean()) if count else float("nan")}
        rows[name] = row
    return rows, output


def write_patches(items: PartItems, output: Tensor, characters: list[str], path: Path, per_character: int = 3) -> None:
    """first frame | synthesised | frame t for the ``per_character`` items of each character whose opening changes
    most, upscaled 4×, written atomically."""
    change = (items.openings[:, 0] - items.openings[:, 1]).abs()
    tiles = []
    for character in characters:
        own = torch.tensor([c == character for c in items.characters], dtype=torch.bool)
        for index in torch.where(own, change, -1.0).argsort(descending=True)[: min(per_character, int(own.sum()))]:
            tiles += [items.source[index], output[index], items.target[index]]
    if not tiles:
        return
    grid = F.interpolate(make_grid(torch.stack(tiles), nrow=3, padding=1, pad_value=1.0)[None], scale_factor=4, mode="nearest")[0]
    with atomic_open(path, "wb") as handle:
        save_image(grid, handle, format="png")


def cells(row: dict) -> str:
    """``items | copy L1 | synthesised L1 (% under the copy's)``, dashes where there are no items."""
    if not row["items"]:
        return "0 | — | —"
    return f"{row['items']} | {row['copy']:.4f} | {row['synthesised']:.4f} ({100 * (1 - row['synthesised'] / row['copy']):+.0f} %)"


def print_table(part: str, rows: dict[str, dict], steps: int) -> None:
    print(f"\n{part} ({steps} steps): L1 of the synthesised patch, % under the copy's\n")
    print("| characters | items | copy L1 | synthesised | opening changes ≥ 0.5: items | copy L1 | synthesised |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {cells(row['all'])} | {cells(row['big'])} |")


def split_clips(clips: list[ClipInfo], held_out: list[str], probe_clips: int, training: list[str]) -> tuple[list[int], list[int], list[int]]:
    """Indices of the training clips, the training characters' held-back clips (their last ``probe_clips`` by name)
    and the held-out characters' clips; characters neither in ``training`` nor held out are not used."""
    train, probe, held = [], [], []
    for character in sorted(set(training) | set(held_out)):
        own = sorted((i for i, c in enumerate(clips) if c.character == character), key=lambda i: clips[i].name)
        if character in held_out:
            held += own
        else:
            cut = max(len(own) - probe_clips, 0)
            train += own[:cut]
            probe += own[cut:]
    return train, probe, held


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="rendered Live2D clips (python -m lightning_app.render)")
    parser.add_argument("--held-out", nargs="+", default=list(DEFAULT_HELD_OUT), help="characters never trained on (default: the default split)")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--budget", type=float, default=150.0, help="training seconds per part")
    parser.add_argument("--size", type=int, default=64, help="image size the frames are read at")
    parser.add_argument("--patch", type=int, default=17, help="patch side in pixels at --size")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--probe-clips", type=int, default=2, help="clips per training character held back for scoring")
    parser.add_argument("--train-characters", type=int, default=0,
                        help="train on this many of the training characters (drawn with --seed), to see how the transfer grows with them; 0: all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("logs/expression_transfer"))
    args = parser.parse_args(argv)
    with exit_on_user_error():
        if min(args.budget, args.size, args.patch, args.batch, args.probe_clips) <= 0 or args.train_characters < 0:
            raise UserFacingError(f"--budget, --size, --patch, --batch and --probe-clips must be positive and --train-characters "
                                  f"at least 0, got {args.budget}, {args.size}, {args.patch}, {args.batch}, {args.probe_clips}, "
                                  f"{args.train_characters}")
        if not args.data.is_dir():
            raise UserFacingError(f"--data {str(args.data)!r} is not a folder; render clips with python -m lightning_app.render --models ../shared/live2d --out {args.data}")
        clips, bad = index_clips(args.data)
        for line in bad:
            print(f"skipping {line}", flush=True)
        without = sorted({c.character for c in clips if "keypoints" not in c.ground_truth})
        if without:
            print(f"leaving out clips without landmarks ({', '.join(without)})", flush=True)
        clips = [c for c in clips if "keypoints" in c.ground_truth]
        characters = sorted({c.character for c in clips})
        unknown = [c for c in args.held_out if c not in characters]
        if unknown:
            raise UserFacingError(f"--held-out {' '.join(unknown)}: no clips with landmarks under {args.data} (characters: {', '.join(characters) or 'none'})")
        candidates = [c for c in characters if c not in args.held_out]
        if args.train_characters > len(candidates):
            raise UserFacingError(f"--train-characters {args.train_characters}: only {len(candidates)} characters are not held out")
        order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(args.seed)).tolist()
        training_characters = sorted(candidates[i] for i in order[: args.train_characters or len(candidates)])
        print(f"training characters: {', '.join(training_characters)}", flush=True)
        train, probe, held = split_clips(clips, args.held_out, args.probe_clips, training_characters)
        if not train or not probe:
            raise UserFacingError(f"--probe-clips {args.probe_clips} leaves no training clips or none to score: every training character needs more clips than that")
        torch.manual_seed(args.seed)
        reader = ClipFrames(clips, args.size, (255, 255, 255))
        seen = sorted({clips[i].character for i in probe})
        groups = {"training characters, held-back clips": seen, **{c: [c] for c in args.held_out}}
        report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                  "training_characters": training_characters, "parts": {}}
        args.out.mkdir(parents=True, exist_ok=True)
        parts = {name: PARTS[name] for name in args.parts}
        print(f"reading the patches of {len(train) + len(probe) + len(held)} clips", flush=True)
        training_items, scored_items = part_items(reader, train, parts, args.patch), part_items(reader, probe + held, parts, args.patch)
        for number, name in enumerate(args.parts, 1):
            label = f"[{number}/{len(args.parts)}] {name}"
            training, scored = training_items[name], scored_items[name]
            print(f"{label}: {len(training.characters)} training items, {len(scored.characters)} scored; training for {args.budget:.0f} s", flush=True)
            if not training.characters:
                print(f"{label}: no training character has this part's opening; skipped", flush=True)
                continue
            model, steps = train_synthesiser(training, args.budget, args.batch, label, (len(args.parts) - number) * args.budget)
            rows, output = score(model, scored, groups)
            print_table(name, rows, steps)
            write_patches(scored, output, args.held_out, args.out / f"patches_{name}.png")
            report["parts"][name] = {"steps": steps, "training_items": len(training.characters), "rows": rows}
            atomic_write_text(args.out / "expression_transfer.json", json.dumps(report, indent=1))
        print(f"\nwrote {args.out / 'expression_transfer.json'} and patches_<part>.png (per held-out character: first frame | "
              "synthesised | frame t, the three largest changes of the opening)")


if __name__ == "__main__":
    main()
