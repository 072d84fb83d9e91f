"""Switch-BERT: a single-stream encoder whose layers switch attention mode and input per sample.

Paper: Guo, Yao, Chu, "Switch-BERT: Learning to Model Multimodal Interactions by Switching Attention
and Input", ECCV 2022, §2.3. docs/method.md §3 reconstructs what the extracted text lost.

Dimension legend
    B batch size, T text tokens, R region tokens (IMG + regions), N = T + R, D hidden size
    M attention modes configured, C input candidates of a Switch-Input Block

Layer l (1-based) does:
    SIB (l >= 2): text and regions each take a mixture of candidates (``out``/``mid``/``in`` of
                  layer l-1, or the outputs of layers l-1..l-3), chosen by a switcher on layer l-1's
                  output.
    SAB:          a switcher on the layer's input picks a mixture of attention modes (SS, SC, CS, J),
                  all computed from one set of Q/K/V (layers/attention.py).
With one mode and no SIB this is exactly a UNITER-style single-stream BERT.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from switchbert.batch import Batch
from switchbert.config import MODES, ModelConfig
from switchbert.layers.attention import expand_mode_weights
from switchbert.layers.embeddings import build_embeddings
from switchbert.layers.pooler import build_poolers
from switchbert.layers.switcher import SwitchDecision, Switcher, pool_modalities, pooling_weights
from switchbert.layers.transformer import SwitchLayer
from switchbert.models.base import VLModel
from switchbert.outputs import EncoderOutput, LayerRoute
from switchbert.weights.keymaps import BERT_POOLER, bert_layer_key_map, text_embeddings_key_map


def sib_num_candidates(config: ModelConfig, layer_index: int) -> int:
    """How many inputs the SIB before 0-based layer ``layer_index`` (>= 1) offers.

    ``out_mid_in`` always offers 3. ``last3`` offers the outputs that exist below: layer 1's SIB
    sees only layer 0's output and the embeddings [ours].
    """
    if config.sib == "last3":
        return min(3, layer_index + 1)
    return len(config.sib_candidates)


class SwitchBertModel(VLModel):
    """The Switch-BERT encoder (and, with one mode and no SIB, the UNITER architecture)."""

    ARCH = "switchbert"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        D = config.hidden_size
        self.embeddings = build_embeddings(config)
        self.layers = nn.ModuleList(
            SwitchLayer(D, config.num_heads, config.intermediate_size, config.hidden_dropout,
                        config.attention_dropout, config.layer_norm_eps)
            for _ in range(config.num_layers)
        )
        st = config.switch_training == "hard_st"
        init_logit = config.switch_init_logit if config.switch_init == "identity" else 0.0
        self.sab_switchers: Optional[nn.ModuleList] = None
        if config.switches_attention:
            self.sab_switchers = nn.ModuleList(
                Switcher(D, len(config.sab_modes), 1, config.alignment, config.top_k, st,
                         identity_option=config.sab_modes.index("J") if "J" in config.sab_modes else 0,
                         identity_logit=init_logit, noise_scale=config.switch_noise)
                for _ in range(config.num_layers)
            )
        self.sib_switchers: Optional[nn.ModuleList] = None
        if config.sib is not None and config.num_layers > 1:
            # Boundary i sits before 0-based layer i + 1.
            self.sib_switchers = nn.ModuleList(
                Switcher(D, sib_num_candidates(config, i + 1), 2, config.alignment, config.sib_top_k, st,
                         identity_option=0, identity_logit=init_logit,  # candidate 0: the previous output
                         noise_scale=config.switch_noise)
                for i in range(config.num_layers - 1)
            )
        self.text_pooler, self.region_pooler, self.fusion = build_poolers(config, D, D)
        # The one-hot weights of a fixed single mode, e.g. J for UNITER.
        fixed = torch.tensor([float(m == config.sab_modes[0]) for m in MODES])
        self.register_buffer("_fixed_mode_weights", fixed, persistent=False)
        self._fixed_joint = config.sab_modes == ("J",)
        self._all_modes = config.sab_modes == MODES
        index = torch.tensor([MODES.index(m) for m in config.sab_modes])
        self.register_buffer("_mode_index", index, persistent=False)
        self.init_weights()

    # -- forward ---------------------------------------------------------------------------------

    def forward(self, batch: Batch, validate: bool = True) -> EncoderOutput:
        """Encodes a batch.

        Args:
            batch: the inputs; the IMG token is added here.
            validate: check shapes first (turn off only in a hot loop that already validated).

        Returns:
            EncoderOutput with per-layer routes when the model has switchers.
        """
        if validate:
            batch.validate(self.config.region_feat_dim)
        text, region, region_mask = self.embeddings(batch)
        T = text.shape[1]
        h = torch.cat([text, region], dim=1)  # (B, N, D)
        valid = torch.cat([batch.text_mask, region_mask], dim=1)  # (B, N)
        hard = not self.training
        impl = self.config.attention_impl
        has_switch = self.sab_switchers is not None or self.sib_switchers is not None
        pool_w = pooling_weights(valid, T, h.dtype) if has_switch else None  # (B, 2, N), the same for every layer
        # (N,) long, 0 text, 1 region: the SIB weight row each token takes.
        modality = (torch.arange(h.shape[1], device=h.device) >= T).long() if self.sib_switchers is not None else None

        outputs = [h]  # outputs[0] = embeddings, outputs[i] = output of 0-based layer i - 1
        prev_in = prev_mid = h
        routes: list[LayerRoute] = []
        for i, layer in enumerate(self.layers):
            sib: Optional[SwitchDecision] = None
            if self.sib_switchers is not None and i > 0:
                candidates = self._sib_candidates(outputs, prev_mid, prev_in)
                g_t, g_r = pool_modalities(h, pool_w)  # h = layer i-1's output
                sib = self.sib_switchers[i - 1](g_t, g_r, hard, batch.noise_group)
                h = _mix_inputs(candidates, sib.weights, modality)

            if self.sab_switchers is not None:
                g_t, g_r = pool_modalities(h, pool_w)
                sab = self.sab_switchers[i](g_t, g_r, hard, batch.noise_group)
                mode_weights = sab.weights.squeeze(1)  # (B, 4); a view, where [:, 0]'s backward fills a zero gradient
                if not self._all_modes:
                    mode_weights = expand_mode_weights(mode_weights, self._mode_index)
                # In training the weights carry gradients (soft, top-K or straight-through), so only
                # inference can take the masked-SDPA path.
                layer_hard = hard
            else:
                sab = None
                # A fixed J layer is plain single-stream attention (UNITER): no per-query mask needed.
                mode_weights = None if self._fixed_joint else self._fixed_mode_weights.expand(h.shape[0], -1)
                layer_hard = True

            mid, out = layer(h, valid, T, mode_weights, layer_hard, impl)
            prev_in, prev_mid, h = h, mid, out
            outputs.append(out)
            if has_switch:
                routes.append(self._route(sab, sib, h.shape[0], h.device))

        text_hidden, region_hidden = h[:, :T], h[:, T:]
        pooled_text = self.text_pooler(text_hidden[:, 0])
        pooled_region = None if self.region_pooler is None else self.region_pooler(region_hidden[:, 0])
        return EncoderOutput(
            text_hidden=text_hidden,
            region_hidden=region_hidden,
            text_mask=batch.text_mask,
            region_mask=region_mask,
            pooled_text=pooled_text,
            pooled_region=pooled_region,
            pooled=self.fusion(pooled_text, pooled_region),
            routes=tuple(routes),
        )

    def _sib_candidates(self, outputs: list[Tensor], prev_mid: Tensor, prev_in: Tensor) -> list[Tensor]:
        if self.config.sib == "last3":
            return [outputs[-1 - j] for j in range(min(3, len(outputs)))]
        return [outputs[-1], prev_mid, prev_in]  # out, mid, in

    def _route(
        self, sab: Optional[SwitchDecision], sib: Optional[SwitchDecision], B: int, device: torch.device
    ) -> LayerRoute:
        if sab is not None:
            probs, weights, choice = sab.probs[:, 0], sab.weights[:, 0].detach(), sab.choice[:, 0]
        else:  # a fixed mode: probability one
            probs = torch.ones(B, 1, device=device)
            weights, choice = probs, torch.zeros(B, dtype=torch.long, device=device)
        names: tuple[str, ...] = ()
        if sib is not None:
            n = sib.probs.shape[-1]
            names = self.config.sib_candidates[:n]
        return LayerRoute(
            modes=self.config.sab_modes,
            sab_probs=probs.detach(),
            sab_weights=weights,
            sab_choice=choice,
            sib_candidates=names,
            sib_probs=None if sib is None else sib.probs.detach(),
            sib_weights=None if sib is None else sib.weights.detach(),
            sib_choice=None if sib is None else sib.choice,
        )

    # -- BERT initialisation ------------------------------------------------------------------------

    def bert_key_map(self, num_bert_layers: int) -> dict[str, str]:
        """Our parameter name -> HF BERT name (without ``bert.``), for every BERT-initialised tensor.

        Text embeddings and layer i <- BERT layer i; region embeddings, switchers and the VOLTA
        poolers start random (docs/method.md §5, controlled setting); BERT's own pooler initialises a
        ``pooler="bert"`` model's.
        """
        m = text_embeddings_key_map()
        for i in range(self.config.num_layers):
            m.update(bert_layer_key_map(f"layers.{i}.", f"encoder.layer.{i}."))
        if self.config.pooler == "bert":
            m.update(BERT_POOLER)
        return m


def _mix_inputs(candidates: list[Tensor], weights: Tensor, modality: Tensor) -> Tensor:
    """Per-modality mixture of SIB candidates.

    Args:
        candidates: C tensors (B, N, D).
        weights: (B, 2, C) for [text, regions].
        modality: (N,) long, 0 for a text token, 1 for a region token.

    Returns:
        (B, N, D).
    """
    # (B, N, C, 1): each token takes its modality's row. Stacking the candidates and one broadcast
    # product + sum is 4 ops forward and 5 backward, against 2C ops forward and about 3C + 3 backward
    # for a sum of C weighted terms.
    per_token = weights.to(candidates[0].dtype).index_select(1, modality).unsqueeze(-1)
    return (torch.stack(candidates, dim=2) * per_token).sum(dim=2)
