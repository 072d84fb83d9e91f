"""Typed model outputs: hidden states, pooled vectors, and the route each sample took.

Dimension legend
    B  batch size, T text tokens, R region tokens (IMG + regions), D hidden size, P pooler size
    M  attention modes a layer switches among, C input candidates a Switch-Input Block offers
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from torch import Tensor


@dataclass
class LayerRoute:
    """What one layer chose, per sample.

    Attributes:
        modes: names of the attention modes, in the order of the last dimension of ``sab_probs``.
        sab_probs: (B, M) switcher probabilities p (before Gumbel noise).
        sab_weights: (B, M) the mixture actually applied (Gumbel-softmax / top-K / one-hot in eval).
        sab_choice: (B,) long, index into ``modes`` of the largest applied weight.
        sib_candidates: names of the Switch-Input candidates (empty when the layer has no SIB).
        sib_probs: (B, 2, C) probabilities for [text, regions], or None.
        sib_weights: (B, 2, C) applied input mixture, or None.
        sib_choice: (B, 2) long, chosen candidate index for [text, regions], or None.
    """

    modes: tuple[str, ...]
    sab_probs: Tensor
    sab_weights: Tensor
    sab_choice: Tensor
    sib_candidates: tuple[str, ...] = ()
    sib_probs: Optional[Tensor] = None
    sib_weights: Optional[Tensor] = None
    sib_choice: Optional[Tensor] = None

    def mode_names(self) -> list[str]:
        """The chosen mode's name for each sample."""
        return [self.modes[i] for i in self.sab_choice.tolist()]

    def input_names(self) -> Optional[list[tuple[str, str]]]:
        """The chosen (text, region) input names for each sample, or None without SIB."""
        if self.sib_choice is None:
            return None
        return [(self.sib_candidates[t], self.sib_candidates[r]) for t, r in self.sib_choice.tolist()]


@dataclass
class EncoderOutput:
    """What every model in this library returns (Switch-BERT and the baselines alike).

    Attributes:
        text_hidden: (B, T, D) last-layer text states.
        region_hidden: (B, R, D_r) last-layer region states; index 0 is the IMG token.
        text_mask: (B, T) bool, True = real token.
        region_mask: (B, R) bool, True = real region token (IMG included unless the sample has no image).
        pooled_text: (B, P) ReLU(Linear) of the [CLS] state (``pooler="bert"``: tanh, P = D).
        pooled_region: (B, P) ReLU(Linear) of the IMG state; None with ``pooler="bert"``.
        pooled: (B, P) fused vector: dropout(pooled_text * pooled_region) (``pooler="bert"``:
            dropout(pooled_text)).
        routes: one ``LayerRoute`` per layer for switching models; empty for fixed architectures.
    """

    text_hidden: Tensor
    region_hidden: Tensor
    text_mask: Tensor
    region_mask: Tensor
    pooled_text: Tensor
    pooled_region: Optional[Tensor]
    pooled: Tensor
    routes: tuple[LayerRoute, ...] = field(default_factory=tuple)

    def route_strings(self) -> list[str]:
        """One readable line per sample: the mode (and SIB inputs) at every layer."""
        if not self.routes:
            return []
        B = self.text_hidden.shape[0]
        lines = []
        for b in range(B):
            parts = []
            for i, r in enumerate(self.routes):
                mode = r.modes[int(r.sab_choice[b])]
                if r.sib_choice is not None:
                    t, v = r.sib_choice[b].tolist()
                    parts.append(f"L{i + 1}:{mode}[t<-{r.sib_candidates[t]},r<-{r.sib_candidates[v]}]")
                else:
                    parts.append(f"L{i + 1}:{mode}")
            lines.append(" ".join(parts))
        return lines
