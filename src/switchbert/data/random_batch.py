"""Random batches of the right shapes, for smoke runs, benchmarks and tests (not a dataset)."""

from __future__ import annotations

from typing import Optional

import torch

from switchbert.batch import Batch
from switchbert.config import ModelConfig


def random_batch(
    config: ModelConfig,
    batch_size: int = 4,
    num_text: int = 12,
    num_regions: int = 6,
    seed: int = 0,
    padded: bool = True,
    device: str | torch.device = "cpu",
    generator: Optional[torch.Generator] = None,
) -> Batch:
    """A batch of random tokens and regions.

    Args:
        config: gives the vocabulary and feature sizes.
        batch_size, num_text, num_regions: B, T, N.
        seed: used when no ``generator`` is given.
        padded: give samples different text lengths and region counts (sample 0 stays full; the
            last sample has no region when there are at least 3 samples).
    """
    g = generator or torch.Generator().manual_seed(seed)
    B, T, N = batch_size, num_text, num_regions
    text_ids = torch.randint(1000, min(config.vocab_size, 30000), (B, T), generator=g)
    text_ids[:, 0] = 101  # [CLS]
    text_len = torch.full((B,), T)
    region_len = torch.full((B,), N)
    if padded and B > 1:
        text_len = torch.randint(2, T + 1, (B,), generator=g)
        text_len[0] = T
        region_len = torch.randint(0, N + 1, (B,), generator=g)
        region_len[0] = N
        if B >= 3:
            region_len[-1] = 0
    text_mask = torch.arange(T)[None] < text_len[:, None]
    text_ids[torch.arange(B), text_len - 1] = 102  # [SEP]
    text_ids = text_ids.masked_fill(~text_mask, 0)
    region_mask = torch.arange(N)[None] < region_len[:, None]
    feats = torch.randn(B, N, config.region_feat_dim, generator=g).abs() * region_mask[..., None]
    xy = torch.rand(B, N, 2, generator=g) * 0.5
    wh = torch.rand(B, N, 2, generator=g) * 0.5 + 0.05
    boxes = torch.cat([xy, xy + wh, (wh[..., :1] * wh[..., 1:])], dim=-1) * region_mask[..., None]
    batch = Batch(text_ids=text_ids, text_mask=text_mask, region_feats=feats, region_boxes=boxes, region_mask=region_mask)
    return batch.to(device)
