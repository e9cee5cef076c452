"""A fully convolutional encoder–decoder over images of any size: mirror padding to the network's stride, and
overlapping windows whose outputs are cropped to their cores, so that a large image costs the memory of a window.

A window reaches `margin` pixels past its core on every side where the image goes on (at the image's own edges the
network's zero padding applies, as it does on a whole image). With `margin` at least `receptive_radius`, every
core pixel sees all it would see in the whole image and the windows' outputs are those of the whole image (for
networks whose normalisation is per channel, not per image: batch norm or none; instance and group norms take their
statistics over the window instead of the image).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

WINDOW = 512  # pixels a side of the windows a large image is cut into (a window grows to hold its margins)


def receptive_radius(levels: Sequence[Mapping[str, Any]]) -> int:
    """A bound on how far (input pixels) an output pixel of the encoder–decoder with these levels looks: every
    k-wide convolution at 1/2**i of the input size reaches (k // 2)·2**i further, a halving 2**i, a doubling
    2**(i+1) (where in its cell of the coarser grid the pixel lies), a bilinear one another 2**(i+1) (it reads
    the neighbouring cell)."""
    radius = 0
    for i, genes in enumerate(levels):
        radius += genes["convs"] * (genes["kernel"] // 2) * 2 ** i
        if i < len(levels) - 1:
            radius += 2 ** i + genes["convs"] * (genes["kernel"] // 2) * 2 ** i  # halving, then the decoder block
            radius += 2 ** (i + 1) * (2 if genes["up"] == "bilinear" else 1)
    return radius


def mirrored(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`x` (..., H, W) extended at the bottom and right to height × width by mirror images about its last row and
    column (the edge pixel not repeated), as often as needed: an image narrower than the padding is reflected
    back and forth."""
    return x.index_select(-2, _folded(x.shape[-2], height, x.device)).index_select(
        -1, _folded(x.shape[-1], width, x.device))


def _folded(n: int, length: int, device) -> torch.Tensor:
    """Indices 0, 1, ..., n-1, n-2, ..., 1, 0, 1, ... (length of them) into an axis of n pixels."""
    i = torch.arange(length, device=device)
    if n == 1:
        return torch.zeros_like(i)
    i = i % (2 * n - 2)
    return torch.where(i < n, i, 2 * n - 2 - i)


def _cores(size: int, core: int, margin: int) -> list[tuple[int, int, int, int]]:
    """(window start, window end, core start, core end) along an axis of `size` pixels: cores of `core` pixels
    (the last one shorter) covering it, each window `margin` wider on each side within the axis."""
    return [(max(0, s - margin), min(size, s + core + margin), s, min(size, s + core))
            for s in range(0, size, core)]


def segment(model: torch.nn.Module, x: torch.Tensor, stride: int, margin: int, window: int = WINDOW) \
        -> torch.Tensor:
    """The model's outputs (N, K, H, W) for images x (N, C, H, W) of any size: mirror-padded at the bottom and
    right to a multiple of `stride` (at least one stride), run whole when that fits a `window`, else in windows
    whose cores are at least `stride` and a multiple of it and whose margins are `margin` rounded up to a multiple
    of it (every window starts on the network's pooling grid); cropped to H × W."""
    h, w = x.shape[-2:]
    padded = mirrored(x, max(stride, -(-h // stride) * stride), max(stride, -(-w // stride) * stride))
    hp, wp = padded.shape[-2:]
    if max(hp, wp) <= window:
        return model(padded)[..., :h, :w]
    margin = -(-margin // stride) * stride
    core = max(stride, (window - 2 * margin) // stride * stride)
    out = None
    for y0, y1, cy0, cy1 in _cores(hp, core, margin):
        for x0, x1, cx0, cx1 in _cores(wp, core, margin):
            part = model(padded[..., y0:y1, x0:x1])
            if out is None:
                out = part.new_empty((*part.shape[:2], hp, wp))
            out[..., cy0:cy1, cx0:cx1] = part[..., cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return out[..., :h, :w]
