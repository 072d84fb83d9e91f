"""RoIPool (max pooling over quantised box bins) in torch ops, batched, CPU or CUDA.

Dimension legend: N images, C channels, H x W the feature map, R boxes, P the output side (14).

The rule is Fast R-CNN's (and torchvision's ``roi_pool``): a box's corners are scaled by
``spatial_scale`` and rounded (half away from zero); the box spans ``end - start + 1`` cells (at least
one); bin ``p`` covers cells ``[floor(p * L / P), ceil((p + 1) * L / P))`` from the start, clipped to
the map; an empty bin gives 0.

How it runs without a loop over bins: every bin is a rectangle of at most ``ceil(L / P) + 1`` cells a
side, so a 2-D sparse table (the map's max over 2^i x 2^j windows, for the few powers of two a bin can
need) answers each bin with four lookups, the "range maximum query" trick. Boxes go in chunks so the
gathered (R, P, P, C) blocks stay small.
"""

from __future__ import annotations

import math

import torch

_ROI_CHUNK = 64


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C's ``round``: 2.5 -> 3, -2.5 -> -3 (``torch.round`` rounds half to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _bins(start: torch.Tensor, end: torch.Tensor, pooled: int, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, P) first cell and (R, P) one-past-last cell of each bin along one axis."""
    length = (end - start + 1).clamp(min=1).to(torch.float32)
    bin_size = length / pooled  # float32, as the reference kernel computes it
    p = torch.arange(pooled, dtype=torch.float32, device=start.device)
    lo = torch.floor(p[None, :] * bin_size[:, None]).to(torch.int64) + start[:, None]
    hi = torch.ceil((p[None, :] + 1) * bin_size[:, None]).to(torch.int64) + start[:, None]
    return lo.clamp(0, limit), hi.clamp(0, limit)


def _sparse_table(x: torch.Tensor, levels_h: int, levels_w: int) -> torch.Tensor:
    """(levels_h, levels_w, N, C, H, W): entry [i, j, ..., y, x] = max of x[..., y:y+2^i, x:x+2^j]."""
    rows = [x]
    for i in range(1, levels_h):
        prev, step = rows[-1], 1 << (i - 1)
        nxt = prev.clone()
        nxt[..., :-step, :] = torch.maximum(prev[..., :-step, :], prev[..., step:, :])
        rows.append(nxt)
    table = []
    for r in rows:
        cols = [r]
        for j in range(1, levels_w):
            prev, step = cols[-1], 1 << (j - 1)
            nxt = prev.clone()
            nxt[..., :-step] = torch.maximum(prev[..., :-step], prev[..., step:])
            cols.append(nxt)
        table.append(torch.stack(cols))
    return torch.stack(table)


def _floor_log2(n: torch.Tensor) -> torch.Tensor:
    """floor(log2(n)) for integer n >= 1 (exact: no float log)."""
    out = torch.zeros_like(n)
    m = n.clone()
    while bool((m > 1).any()):
        bigger = m > 1
        out = out + bigger.to(out.dtype)
        m = torch.where(bigger, m // 2, m)
    return out


def roi_pool(features: torch.Tensor, rois: torch.Tensor, output_size: int, spatial_scale: float) -> torch.Tensor:
    """Max-pools each box into a P x P grid.

    Args:
        features: (N, C, H, W).
        rois: (R, 5) rows of ``batch index, x1, y1, x2, y2`` in input pixels.
        output_size: P.
        spatial_scale: feature cells per input pixel (1/16).

    Returns:
        (R, C, P, P), zeros where a bin is empty.
    """
    n, c, h, w = features.shape
    r = rois.shape[0]
    out = features.new_zeros((r, c, output_size, output_size))
    if r == 0:
        return out
    b = rois[:, 0].to(torch.int64)
    coords = _round_half_away(rois[:, 1:].to(torch.float32) * torch.tensor(spatial_scale, dtype=torch.float32))
    x1, y1, x2, y2 = coords.to(torch.int64).unbind(1)
    hs, he = _bins(y1, y2, output_size, h)  # (R, P)
    ws, we = _bins(x1, x2, output_size, w)
    hlen, wlen = he - hs, we - ws
    max_h, max_w = int(hlen.max()), int(wlen.max())
    if max_h <= 0 or max_w <= 0:
        return out
    table = _sparse_table(features, int(math.log2(max_h)) + 1, int(math.log2(max_w)) + 1)
    kh = _floor_log2(hlen.clamp(min=1))
    kw = _floor_log2(wlen.clamp(min=1))
    # Four windows of side 2^k that together cover the bin exactly: top-left anchored at the start,
    # bottom-right ending at the end. Clamping keeps empty bins' (masked) lookups in range.
    y_a, y_b = hs.clamp(max=h - 1), (he - (1 << kh)).clamp(min=0, max=h - 1)
    x_a, x_b = ws.clamp(max=w - 1), (we - (1 << kw)).clamp(min=0, max=w - 1)
    empty = (hlen <= 0)[:, :, None] | (wlen <= 0)[:, None, :]  # (R, P, P)
    for s in range(0, r, _ROI_CHUNK):
        e = min(s + _ROI_CHUNK, r)
        ki, kj = kh[s:e, :, None], kw[s:e, None, :]
        bi = b[s:e, None, None]
        vals = None
        for yy in (y_a[s:e, :, None], y_b[s:e, :, None]):
            for xx in (x_a[s:e, None, :], x_b[s:e, None, :]):
                v = table[ki, kj, bi, :, yy, xx]  # (r, P, P, C): advanced indices first, then C
                vals = v if vals is None else torch.maximum(vals, v)
        vals = vals.masked_fill(empty[s:e, :, :, None], 0.0)
        out[s:e] = vals.permute(0, 3, 1, 2)
    return out
