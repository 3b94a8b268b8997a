"""``FiLMUNet``: a residual U-Net whose blocks are modulated (FiLM) by a portrait embedding and the motion."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from timm.models.convnext import ConvNeXtBlock
from torch import Tensor, nn

from modules.backbones.base import AnimatorBackbone
from modules.descriptors.base import Motion, MotionSpec


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class FiLMResBlock(nn.Module):
    """Pre-activation residual block; ``γ, β`` from the conditioning vector scale and shift its first norm.

    The FiLM projection starts at zero, so an untrained block is a plain residual block.
    """

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = _group_norm(channels), _group_norm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        gamma, beta = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        h = self.conv1(F.silu(self.norm1(x) * (1.0 + gamma) + beta))
        return x + self.conv2(F.silu(self.norm2(h)))


class FiLMConvNeXtBlock(nn.Module):
    """A timm ConvNeXt block (7×7 depthwise conv, LayerNorm, inverted MLP, layer scale) whose input is scaled and
    shifted by ``γ, β`` from the conditioning vector; the FiLM projection starts at zero."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.block = ConvNeXtBlock(channels, ls_init_value=1e-2)
        self.film = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        gamma, beta = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        return self.block(x * (1.0 + gamma) + beta)


BLOCKS = {"residual": FiLMResBlock, "convnext": FiLMConvNeXtBlock}


class PortraitEncoder(nn.Module):
    """Portrait ``B×C'×h×w`` → identity embedding ``B×embed_dim`` (strided convs, global average pool)."""

    def __init__(self, in_channels: int, width: int, embed_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), _group_norm(out), nn.SiLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(channels, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.features(x).mean(dim=(-2, -1)))


class FiLMUNet(AnimatorBackbone):
    """Residual U-Net animator with FiLM conditioning.

    The source is folded to ``1/fold`` resolution (pixel unshuffle: no detail is lost, it moves into channels),
    joined with the source and driving motion maps (if the descriptor has them), encoded and decoded by FiLM
    residual blocks, and unfolded (pixel shuffle) into a full-resolution residual that is added to the source. Every block is conditioned on ``[portrait embedding, motion embedding]``, where the
    motion embedding comes from the source and driving descriptor vectors. The output layer starts at zero, so
    an untrained network returns the source unchanged.

    Args:
        motion: what the descriptor emits (given by the AnimatorModule).
        channels: image channels (given by the AnimatorModule, linked from the data).
        width: channels at the first level (doubling per level, capped at ``4·width``).
        depth: number of downsamplings after the fold.
        fold: pixel-unshuffle factor of the input (2 or 4; 4 is about 4× cheaper at the same width).
        embed_dim: size of the portrait and of the motion embedding.
        motion_map_channels: channels the motion maps are projected to before joining the image.
        motion_input_channels: also join the image with this many constant channels projected from the source and
            driving motion vectors (0: none; the vectors then enter through FiLM only). FiLM projections and the
            output head both start at zero, so through FiLM alone the motion reaches the output only after the
            head has grown, which is slow; constant input channels give motion-dependent features from the first step.
        block: ``"residual"`` (FiLM pre-activation residual blocks) or ``"convnext"`` (FiLM-modulated timm
            ConvNeXt blocks).
    """

    def __init__(
        self,
        motion: MotionSpec,
        channels: int = 3,
        width: int = 32,
        depth: int = 3,
        embed_dim: int = 128,
        motion_map_channels: int = 16,
        fold: int = 4,
        block: Literal["residual", "convnext"] = "residual",
        motion_input_channels: int = 0,
    ) -> None:
        super().__init__()
        if motion_input_channels < 0:
            raise ValueError(f"motion_input_channels must be non-negative, got {motion_input_channels}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        if fold < 1:
            raise ValueError(f"fold must be at least 1, got {fold}")
        self.channels, self.depth, self.fold = channels, depth, fold
        self.size_multiple = fold * 2**depth
        folded = fold * fold * channels
        self.portrait = PortraitEncoder(folded, width, embed_dim)
        self.motion_mlp = nn.Sequential(nn.Linear(2 * motion.vector_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.map_proj = nn.Conv2d(2 * motion.map_channels, motion_map_channels, 1) if motion.map_channels else None
        self.vector_proj = nn.Linear(2 * motion.vector_dim, motion_input_channels) if motion_input_channels else None
        cond = 2 * embed_dim
        widths = [width * 2 ** min(i, 2) for i in range(depth + 1)]
        inputs = folded + (motion_map_channels if motion.map_channels else 0) + motion_input_channels
        self.stem = nn.Conv2d(inputs, widths[0], 3, padding=1)
        Block = BLOCKS[block]
        self.enc_blocks = nn.ModuleList(Block(w, cond) for w in widths[:-1])
        self.downs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths[:-1], widths[1:]))
        self.mid = Block(widths[-1], cond)
        self.ups = nn.ModuleList(nn.Conv2d(b, a, 1) for a, b in zip(widths[:-1], widths[1:]))
        self.merges = nn.ModuleList(nn.Conv2d(2 * w, w, 1) for w in widths[:-1])
        self.dec_blocks = nn.ModuleList(Block(w, cond) for w in widths[:-1])
        self.head = nn.Sequential(_group_norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], folded, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def trunk(self, source: Tensor, source_motion: Motion, driving_motion: Motion) -> Tensor:
        """The U-Net's output features ``B×width×(H/fold)×(W/fold)`` before the head (for generators built on it)."""
        self.check_size(*source.shape[-2:])
        x = F.pixel_unshuffle(source, self.fold)
        vectors = torch.cat([source_motion.vector, driving_motion.vector], 1)
        cond = torch.cat([self.portrait(x), self.motion_mlp(vectors)], 1)
        joined = [x]
        if self.map_proj is not None:
            maps = self.map_proj(torch.cat([source_motion.maps, driving_motion.maps], 1))
            joined.append(F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False))
        if self.vector_proj is not None:
            joined.append(self.vector_proj(vectors)[:, :, None, None].expand(-1, -1, *x.shape[-2:]))
        x = torch.cat(joined, 1)
        h = self.stem(x)
        skips = []
        for block, down in zip(self.enc_blocks, self.downs):
            h = block(h, cond)
            skips.append(h)
            h = down(h)
        h = self.mid(h, cond)
        for up, merge, block, skip in zip(reversed(self.ups), reversed(self.merges), reversed(self.dec_blocks), reversed(skips)):
            h = F.interpolate(up(h), size=skip.shape[-2:], mode="nearest")
            h = block(merge(torch.cat([h, skip], 1)), cond)
        return h

    def forward(self, source: Tensor, source_motion: Motion, driving_motion: Motion) -> Tensor:
        return source + F.pixel_shuffle(self.head(self.trunk(source, source_motion, driving_motion)), self.fold)
