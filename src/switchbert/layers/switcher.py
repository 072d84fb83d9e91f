"""The switcher shared by the Switch-Attention and Switch-Input blocks (paper §2.3.1, Eq. 5-8).

Dimension legend
    B  batch size, D hidden size, G groups decided together (1 for SAB, 2 for SIB: text, regions)
    K  options per group (attention modes or input candidates)

Per sample: pool each modality, form an alignment degree ``a``, p = softmax(MLP(a)). Training mixes
the options with Gumbel-softmax weights at temperature tau; evaluation takes the hard argmax of p.
The MLP's last layer starts near zero so routing starts near uniform [ours, docs/method.md §3.2]; with
``identity_logit`` > 0 its bias instead favours the identity option (J for a SAB, ``out`` for a SIB), so the
model starts as its UNITER [ours, docs/method.md "Switcher initialisation"].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Gumbel noise: u in (0, 1) strictly. float32 only: bf16/fp16 would round u to 0 or 1 and give inf.
_U_EPS = 1e-6


@dataclass
class SwitchDecision:
    """A switcher's decision for one batch.

    Attributes:
        probs: (B, G, K) p = softmax(MLP(a)), float32.
        weights: (B, G, K) the mixture to apply, float32; rows sum to 1, at most top_k non-zero.
        choice: (B, G) long, argmax of ``weights``.
    """

    probs: Tensor
    weights: Tensor
    choice: Tensor


def pooling_weights(valid: Tensor, num_text: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Masked-mean weights of the two modalities (docs/method.md §3.2 step 1), built once per forward pass.

    Args:
        valid: (B, N) bool over the text-then-region sequence.
        num_text: T; positions < T are text, the rest regions (IMG included).
        dtype: of the weights (the hidden states' dtype, so 1/count is exact enough in float64 too).

    Returns:
        (B, 2, N): row 0 averages the valid text positions, row 1 the valid region positions; a row is
        all zeros (mean 0) for a sample with no valid position of that modality.
    """
    is_text = torch.arange(valid.shape[1], device=valid.device) < num_text
    w = torch.stack([valid & is_text, valid & ~is_text], dim=1).to(dtype)  # (B, 2, N)
    return w / w.sum(dim=-1, keepdim=True).clamp(min=1.0)


def pool_modalities(h: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Masked means of the text and region tokens of ``h`` (B, N, D): (B, D), (B, D).

    One batched matmul with ``pooling_weights``. Slicing ``h`` per modality and averaging would cost
    about ten small ops, and its backward writes a zero-filled full-size gradient for each slice.
    """
    pooled = torch.bmm(weights.to(h.dtype), h)  # (B, 2, D)
    g_t, g_r = pooled.unbind(dim=1)  # unbind, not two selects: its backward is one stack, not 2 fills + 2 copies
    return g_t, g_r


def alignment_degree(g_t: Tensor, g_r: Tensor, kind: str) -> Tensor:
    """The switcher's view of how the two modalities relate (docs/method.md §3.2 step 2).

    Args:
        g_t, g_r: (B, D) pooled text and region features.
        kind: "hadamard" (paper default), "concat" or "rich".

    Returns:
        (B, D), (B, 2D) or (B, 4D).
    """
    if kind == "hadamard":
        return g_t * g_r
    if kind == "concat":
        return torch.cat([g_t, g_r], dim=-1)
    if kind == "rich":
        return torch.cat([g_t, g_r, g_t * g_r, (g_t - g_r).abs()], dim=-1)
    raise ValueError(f"unknown alignment {kind!r}")


ALIGNMENT_WIDTH = {"hadamard": 1, "concat": 2, "rich": 4}

# Switcher.override values: measurement only (benchmarks/study_causes.py), never set in training.
#   "soft": the noise-free mixture softmax(log p / tau) (at tau = 1: p itself);
#   "hard": the one-hot argmax of p (what evaluation takes);
#   "identity": the one-hot identity option (J / ``out``): the layer runs as its UNITER layer.
ROUTE_OVERRIDES = ("soft", "hard", "identity")


def gumbel_softmax_weights(
    log_probs: Tensor,
    tau: Tensor | float,
    top_k: Optional[int],
    straight_through: bool,
    generator: Optional[torch.Generator] = None,
    noise_group: Optional[Tensor] = None,
    noise_scale: float = 1.0,
) -> Tensor:
    """Training-time mixture weights (docs/method.md §3.2 steps 4 and 6).

    Args:
        log_probs: (B, ..., K) float32 log p.
        tau: temperature > 0.
        top_k: keep the K largest weights and renormalise; None keeps all.
        straight_through: forward a one-hot argmax, backward through the soft weights.
        noise_group: optional (B,) long ids in [0, B); rows with the same id get the same Gumbel
            noise (``Batch.noise_group``). None = independent noise per row.
        noise_scale: multiplies the Gumbel noise (1 = the paper's Gumbel-softmax; 0 = the noise-free
            mixture softmax(log p / tau), no draw) [ours, ``ModelConfig.switch_noise``].

    Returns:
        (..., K) float32 weights.
    """
    # g = -log(-log u) = -log(E) with E = -log u ~ Exp(1): drawn directly, clamped to the E of
    # u in [_U_EPS, 1 - _U_EPS] (the same truncation), 3 ops instead of 5; log p + g as one subtraction.
    if noise_scale == 0:
        soft = torch.softmax(log_probs.float() / tau, dim=-1)
    else:
        e = torch.empty(log_probs.shape, dtype=torch.float32, device=log_probs.device).exponential_(generator=generator)
        if noise_group is not None:
            e = e[noise_group]  # row i takes the draw of row noise_group[i]: one draw per group
        neg_gumbel = e.clamp_(-math.log1p(-_U_EPS), -math.log(_U_EPS)).log_()
        if noise_scale != 1:
            neg_gumbel = neg_gumbel * noise_scale
        soft = torch.softmax((log_probs.float() - neg_gumbel) / tau, dim=-1)
    K = soft.shape[-1]
    if straight_through or top_k == 1:
        # top_k == 1 [ours]: renormalising a single weight gives exactly 1 and no gradient at all,
        # so the switcher could never learn; the straight-through estimator keeps a gradient.
        hard = F.one_hot(soft.argmax(dim=-1), K).to(soft.dtype)
        return hard - soft.detach() + soft
    if top_k is not None and top_k < K:
        kth = soft.topk(top_k, dim=-1).values[..., -1:]
        kept = soft * (soft >= kth).to(soft.dtype)
        return kept / kept.sum(dim=-1, keepdim=True)
    return soft


class Switcher(nn.Module):
    """Chooses, per sample, a mixture over ``num_options`` options for each of ``num_groups`` groups.

    Args:
        hidden_size: D of the pooled features.
        num_options: K.
        num_groups: G (1 for SAB; 2 for SIB, one decision per modality).
        alignment: "hadamard", "concat" or "rich".
        top_k: options kept per sample in training (None = all).
        straight_through: hard one-hot forward in training (ablation only).
        identity_option: the option that makes the layer its UNITER layer (J for a SAB, ``out`` for a SIB).
        identity_logit: initial bias of that option's logit (0 = uniform start, the paper's reading).
        noise_scale: of the training-time Gumbel noise (1 = the paper's; 0 = noise-free mixture).
    """

    def __init__(
        self,
        hidden_size: int,
        num_options: int,
        num_groups: int = 1,
        alignment: str = "hadamard",
        top_k: Optional[int] = None,
        straight_through: bool = False,
        identity_option: int = 0,
        identity_logit: float = 0.0,
        noise_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0 <= identity_option < num_options:
            raise ValueError(f"identity_option {identity_option} outside [0, {num_options})")
        self.identity_option = identity_option
        self.identity_logit = float(identity_logit)
        self.noise_scale = float(noise_scale)
        self.override: Optional[str] = None  # ROUTE_OVERRIDES, for measurements; None = normal behaviour
        self.num_options = num_options
        self.num_groups = num_groups
        self.alignment = alignment
        self.top_k = None if top_k is None or top_k >= num_options else top_k
        self.straight_through = straight_through
        in_dim = ALIGNMENT_WIDTH[alignment] * hidden_size
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, num_groups * num_options)
        )
        # A buffer, not a float attribute, so torch.compile does not recompile as tau anneals.
        self.register_buffer("tau", torch.tensor(1.0), persistent=False)

    def reset_output_layer(self, std: float = 1e-3) -> None:
        """Near-zero last layer: routing starts near uniform [ours, docs/method.md §3.2 step 3], or near
        the identity option when ``identity_logit`` > 0 (p = e^b / (e^b + K - 1) for bias b)."""
        nn.init.normal_(self.mlp[-1].weight, std=std)
        nn.init.zeros_(self.mlp[-1].bias)
        if self.identity_logit:
            with torch.no_grad():
                self.mlp[-1].bias.view(self.num_groups, self.num_options)[:, self.identity_option] = self.identity_logit

    def forward(self, g_t: Tensor, g_r: Tensor, hard: bool, noise_group: Optional[Tensor] = None) -> SwitchDecision:
        """Args:
            g_t, g_r: (B, D) pooled text and region features.
            hard: deterministic one-hot argmax of p (inference) instead of Gumbel-softmax.
            noise_group: optional (B,) long; samples with the same id share their Gumbel noise.
        """
        B = g_t.shape[0]
        logits = self.mlp(alignment_degree(g_t, g_r, self.alignment))
        log_probs = torch.log_softmax(logits.float().view(B, self.num_groups, self.num_options), dim=-1)
        if self.override is not None:
            return self._overridden(log_probs)
        if hard:
            choice = log_probs.argmax(dim=-1)
            weights = F.one_hot(choice, self.num_options).to(torch.float32)
        else:
            weights = gumbel_softmax_weights(log_probs, self.tau, self.top_k, self.straight_through,
                                             noise_group=noise_group, noise_scale=self.noise_scale)
            choice = weights.detach().argmax(dim=-1)
        return SwitchDecision(probs=log_probs.exp(), weights=weights, choice=choice)

    def _overridden(self, log_probs: Tensor) -> SwitchDecision:
        """The decision under ``self.override`` (measurements only; see ROUTE_OVERRIDES).

        A soft override in an eval-mode model is run with the model's training flag on (the caller's
        job): an eval-mode layer takes one-hot weights for granted (masked-SDPA path).
        """
        if self.override == "soft":
            weights = torch.softmax(log_probs / self.tau, dim=-1)
        elif self.override == "hard":
            weights = F.one_hot(log_probs.argmax(dim=-1), self.num_options).to(torch.float32)
        elif self.override == "identity":
            weights = torch.zeros_like(log_probs)
            weights[..., self.identity_option] = 1.0
        else:
            raise ValueError(f"unknown switcher override {self.override!r}; expected one of {ROUTE_OVERRIDES}")
        return SwitchDecision(probs=log_probs.exp(), weights=weights, choice=weights.argmax(dim=-1))
