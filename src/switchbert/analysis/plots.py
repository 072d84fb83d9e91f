"""Figures of route analysis: a Fig.-4-style route diagram, frequency bars, and training dynamics.

Everything draws with matplotlib's Agg backend into PNG files (no display needed) and returns the path.

    plot_route_diagram(arch, path)          one architecture: layers bottom to top, the mode each chose
                                            (which key block each modality attends), SIB input arrows
    plot_mode_frequencies(stats, path)      per-layer attention-mode shares, stacked
    plot_sib_frequencies(stats, path)       per-layer input shares, one panel per modality
    plot_training_dynamics(records, path)   per-layer mode probabilities vs step, tau on a twin axis
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from switchbert.analysis.routes import MODALITIES, Architecture, RouteStats  # noqa: E402
from switchbert.io import read_jsonl  # noqa: E402

MODE_COLORS: dict[str, str] = {"SS": "#4C72B0", "SC": "#DD8452", "CS": "#55A868", "J": "#8172B3"}
"""One colour per attention mode, shared by every figure."""
CANDIDATE_COLORS: dict[str, str] = {"out": "#4d4d4d", "mid": "#E24A33", "in": "#348ABD",
                                    "l-1": "#4d4d4d", "l-2": "#E24A33", "l-3": "#348ABD"}
MODE_NAMES = {"SS": "self-self", "SC": "self-cross", "CS": "cross-self", "J": "joint"}

# Which key blocks each modality's queries attend in a mode (paper Table 1): (text queries, region queries).
MODE_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "SS": (("text",), ("region",)),
    "SC": (("text",), ("text",)),
    "CS": (("region",), ("region",)),
    "J": (("text", "region"), ("text", "region")),
}

PathLike = Union[str, Path]


def _save(fig: "plt.Figure", path: PathLike, dpi: int = 130, caveat: str = "") -> Path:
    """Saves ``fig``; a ``caveat`` is drawn under it in red and kept in the PNG's Description, so a figure
    copied into a slide or a paper carries it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if caveat:
        fig.text(0.5, -0.02, textwrap.fill(caveat, 110), ha="center", va="top", fontsize=7, color="firebrick",
                 fontweight="bold")
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Description": caveat} if caveat else None)
    plt.close(fig)
    return path


def route_caveat(stats: RouteStats) -> str:
    """What a route figure of ``stats`` must say on its face: its switchers are near-ties, so the choices
    drawn are argmaxes over almost equal probabilities; "" when every switcher is decided."""
    from switchbert.analysis.routes import NEAR_TIE_MARGIN

    switchers, ties = stats.switcher_confidence(), stats.near_ties()
    if not ties:
        return ""
    if len(ties) == len(switchers):
        return (f"UNDECIDED: all {len(switchers)} switchers are near-ties (mean margin between the two most "
                f"probable options < {NEAR_TIE_MARGIN:g}); these routes are ties broken arbitrarily, not learnt choices")
    where = ", ".join(f"L{layer} {name}" for layer, name, _ in ties)
    return f"Undecided (near-tie, margin < {NEAR_TIE_MARGIN:g}): {where}; read those choices as ties, not findings"


# -- 1. the route diagram ---------------------------------------------------------------------------------


def plot_route_diagram(arch: Architecture, path: PathLike, title: str = "", caveat: str = "") -> Path:
    """Draws one architecture in the manner of the paper's Fig. 4.

    Layers are stacked bottom (layer 1) to top. Each layer is two columns, text | regions, split into an
    attention part (lower, coloured by the chosen mode, with arrows from the key blocks each modality
    attends: straight = self, diagonal = cross, both = joint) and an FFN part (upper). Below each layer,
    each modality's input arrow shows what its Switch-Input Block chose: ``out`` straight from the layer
    below, ``mid`` from the middle of the layer below (after its attention), ``in`` from the input of
    the layer below (a skip), ``l-k`` from k layers down.

    Args:
        arch: the architecture (e.g. ``stats.top_architectures[0]``).
        path: output PNG.
        title: figure title (the share is appended).
    """
    L = len(arch.layers)
    col_x = {"text": 0.0, "region": 2.2}  # left edges of the two columns
    w, att_h, ffn_h, gap = 1.4, 0.9, 0.5, 0.9
    layer_h = att_h + ffn_h
    fig_h = max(3.0, 1.2 + L * (layer_h + gap) * 0.62)
    fig, ax = plt.subplots(figsize=(7.0, fig_h))

    def y0(layer: int) -> float:  # bottom of 1-based layer
        return gap + (layer - 1) * (layer_h + gap)

    # The embeddings, "layer 0"'s output.
    for m in MODALITIES:
        x = col_x[m]
        ax.add_patch(FancyBboxPatch((x, 0.05), w, 0.45, boxstyle="round,pad=0.02", fc="#eeeeee", ec="#777777"))
        ax.text(x + w / 2, 0.27, f"{'text' if m == 'text' else 'region'} embeddings", ha="center", va="center",
                fontsize=7.5)

    for i, choice in enumerate(arch.layers, start=1):
        base = y0(i)
        color = MODE_COLORS.get(choice.mode, "#999999")
        keys = MODE_KEYS.get(choice.mode, ((), ()))
        for g, m in enumerate(MODALITIES):
            x = col_x[m]
            ax.add_patch(FancyBboxPatch((x, base), w, att_h, boxstyle="round,pad=0.02", fc=color, ec="black",
                                        alpha=0.85, lw=0.8))
            ax.add_patch(FancyBboxPatch((x, base + att_h), w, ffn_h, boxstyle="round,pad=0.02", fc="#f7f7f7",
                                        ec="black", lw=0.8))
            ax.text(x + w / 2, base + att_h + ffn_h / 2, "FFN", ha="center", va="center", fontsize=7)
            attends = " + ".join("T" if k == "text" else "R" for k in keys[g]) or "?"
            ax.text(x + w / 2, base + att_h * 0.68, f"{'T' if m == 'text' else 'R'} \u2190 {attends}", ha="center",
                    va="center", fontsize=8, color="white", fontweight="bold")
            # Key-block arrows: from the bottom of the attended column into this query box; a cross
            # arrow runs diagonally between the columns, a self arrow straight up.
            for k in keys[g]:
                if k == m:
                    start, end = (x + w / 2, base - 0.12), (x + w / 2, base + att_h * 0.38)
                else:
                    kx = col_x[k] + (w - 0.15 if k == "text" else 0.15)
                    qx = x + (w - 0.15 if m == "text" else 0.15)
                    start, end = (kx, base - 0.12), (qx, base + att_h * 0.38)
                ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=9, color="#222222",
                                             lw=1.3, zorder=5))
        ax.text(col_x["region"] + w + 0.7, base + att_h / 2, f"L{i}  {choice.mode}\n{MODE_NAMES.get(choice.mode, '')}",
                ha="left", va="center", fontsize=8, color=color, fontweight="bold")

        # Input arrows into this layer.
        for m, src in zip(MODALITIES, (choice.text_input, choice.region_input)):
            _input_arrow(ax, m, src, i, col_x[m], w, y0, att_h, layer_h)

    share = f"{arch.share:.1%} of samples ({arch.count:,})"
    ax.set_title(f"{title}\n{share}" if title else share, fontsize=10)
    handles = [plt.Line2D([], [], color=CANDIDATE_COLORS[c], lw=2, label=lbl) for c, lbl in
               (("out", "input = output below"), ("mid", "input = mid (after attention)"),
                ("in", "input = input of the layer below"))]
    if any(c.text_input and c.text_input.startswith("l-") for c in arch.layers):
        handles = [plt.Line2D([], [], color=CANDIDATE_COLORS[c], lw=2, label=f"input = output of layer {c}")
                   for c in ("l-1", "l-2", "l-3")]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2, fontsize=7, frameon=False)
    ax.set_xlim(-0.9, col_x["region"] + w + 1.8)
    ax.set_ylim(-0.1, y0(L) + layer_h + 0.3)
    ax.set_axis_off()
    return _save(fig, path, caveat=caveat)


def _input_arrow(ax, modality: str, source: Optional[str], layer: int, x: float, w: float, y0, att_h: float,
                 layer_h: float) -> None:
    """The arrow carrying ``modality``'s input into ``layer`` from the chosen SIB candidate."""
    top_of_below = y0(layer - 1) + layer_h if layer > 1 else 0.5  # output of the layer below (or embeddings)
    dst = (x + w / 2, y0(layer) - 0.02)
    outside = -1 if modality == "text" else 1  # skips run outside the columns
    edge = x if modality == "text" else x + w
    if source is None or source in ("out", "l-1"):
        ax.add_patch(FancyArrowPatch((x + w / 2, top_of_below + 0.02), dst, arrowstyle="-|>", mutation_scale=10,
                                     color=CANDIDATE_COLORS["out"], lw=1.5))
        return
    if source == "mid":
        src_y = y0(layer - 1) + att_h
    elif source == "in":
        src_y = y0(layer - 1) - 0.08 if layer > 2 else 0.5
    else:  # "l-k": the output of k layers down (k=2 from layer 2 is the embeddings)
        k = int(source.split("-")[1])
        src_y = y0(layer - k) + layer_h if layer - k >= 1 else 0.5
    color = CANDIDATE_COLORS.get(source, "#999999")
    start = (edge, src_y)
    # Each candidate kind has its own lane outside the column, so skips into consecutive layers never overlap.
    lane = {"mid": 0.25, "in": 0.5, "l-2": 0.25, "l-3": 0.5}.get(source, 0.4)
    mid_x = edge + outside * lane
    ax.plot([start[0], mid_x, mid_x], [start[1], start[1], dst[1] - 0.25], color=color, lw=1.5)
    ax.add_patch(FancyArrowPatch((mid_x, dst[1] - 0.25), (dst[0] + outside * 0.3, dst[1]), arrowstyle="-|>",
                                 mutation_scale=10, color=color, lw=1.5))
    ax.text(mid_x + outside * 0.05, (start[1] + dst[1]) / 2, source, ha="left" if outside > 0 else "right",
            va="center", fontsize=7, color=color)


# -- 2, 3. frequency bars -------------------------------------------------------------------------------------


def plot_mode_frequencies(stats: RouteStats, path: PathLike, title: str = "", caveat: Optional[str] = None) -> Path:
    """Per-layer share of samples choosing each attention mode, as stacked bars (layer 1 left)."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(stats.layers) + 2.0), 3.4))
    modes = list(dict.fromkeys(m for layer in stats.layers for m in layer.modes))
    xs = [layer.layer for layer in stats.layers]
    bottom = [0.0] * len(xs)
    for m in modes:
        h = [layer.mode_frequencies().get(m, 0.0) for layer in stats.layers]
        ax.bar(xs, h, bottom=bottom, color=MODE_COLORS.get(m), label=f"{m} ({MODE_NAMES.get(m, m)})", width=0.75)
        bottom = [b + v for b, v in zip(bottom, h)]
    ax.set_xticks(xs, [f"L{x}" for x in xs])
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of samples")
    ax.set_xlabel("layer")
    ax.set_title(title or f"Attention mode per layer ({stats.num_samples:,} samples)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _save(fig, path, caveat=route_caveat(stats) if caveat is None else caveat)


def plot_sib_frequencies(stats: RouteStats, path: PathLike, title: str = "", caveat: Optional[str] = None) -> Path:
    """Per-layer share of samples taking each Switch-Input candidate, one panel per modality."""
    layers = [layer for layer in stats.layers if layer.sib_candidates]
    if not layers:
        raise ValueError(f"{stats.model}: no Switch-Input Block, nothing to plot")
    cands = list(dict.fromkeys(c for layer in layers for c in layer.sib_candidates))
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 0.9 * len(layers) + 4.0), 3.2), sharey=True)
    xs = [layer.layer for layer in layers]
    for ax, modality in zip(axes, MODALITIES):
        bottom = [0.0] * len(xs)
        for c in cands:
            h = [layer.sib_frequencies(modality).get(c, 0.0) for layer in layers]
            ax.bar(xs, h, bottom=bottom, color=CANDIDATE_COLORS.get(c), label=c, width=0.75)
            bottom = [b + v for b, v in zip(bottom, h)]
        ax.set_xticks(xs, [f"L{x}" for x in xs])
        ax.set_title(f"{modality} input", fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("share of samples")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="candidate",
                   title_fontsize=7)
    fig.suptitle(title or f"Switch-Input choice per layer ({stats.num_samples:,} samples)", fontsize=10)
    return _save(fig, path, caveat=route_caveat(stats) if caveat is None else caveat)


# -- 4. training dynamics ----------------------------------------------------------------------------------


def read_metrics(path: PathLike) -> list[dict]:
    """The records of a metrics JSONL file (one JSON object a line; blank lines skipped)."""
    return read_jsonl(path)


_SAB_KEY = re.compile(r"^routes/sab/L(\d+)/(\w+)$")
_SIB_KEY = re.compile(r"^routes/sib/L(\d+)/(text|region)/([\w-]+)$")


def plot_training_dynamics(
    records: Union[PathLike, Iterable[Mapping]], path: PathLike, kind: str = "sab", title: str = ""
) -> Path:
    """How the switchers' probabilities evolve during training as tau anneals.

    One panel per layer: the mean probability of each mode (``kind="sab"``, keys ``routes/sab/L{i}/{mode}``)
    or of each input candidate per modality (``kind="sib"``, keys ``routes/sib/L{i}/{modality}/{candidate}``;
    solid = text, dashed = regions) against ``step``, and tau (key ``tau``) on a twin axis, log scale.

    Args:
        records: a metrics JSONL path, or its records (dicts with ``step`` and the keys above).
        path: output PNG.
        kind: "sab" or "sib".
    """
    if kind not in ("sab", "sib"):
        raise ValueError(f"kind must be 'sab' or 'sib', got {kind!r}")
    recs = read_metrics(records) if isinstance(records, (str, Path)) else list(records)
    series: dict[int, dict[tuple[str, str], tuple[list[float], list[float]]]] = {}
    tau_steps, taus = [], []
    for rec in recs:
        # The trainer's log also has validation lines ("split": "val"); curves come from training lines.
        if "step" not in rec or rec.get("split", "train") != "train":
            continue
        step = float(rec["step"])
        if rec.get("tau") is not None:
            tau_steps.append(step)
            taus.append(float(rec["tau"]))
        for key, value in rec.items():
            m = (_SAB_KEY if kind == "sab" else _SIB_KEY).match(key)
            if not m or value is None:
                continue
            layer = int(m.group(1))
            label = (m.group(2), "") if kind == "sab" else (m.group(3), m.group(2))
            xs, ys = series.setdefault(layer, {}).setdefault(label, ([], []))
            xs.append(step)
            ys.append(float(value))
    if not series:
        raise ValueError(f"no 'routes/{kind}/L*' keys with a 'step' in the metrics: nothing to plot")
    layers = sorted(series)
    ncol = min(4, len(layers))
    nrow = -(-len(layers) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 2.5 * nrow), squeeze=False, sharex=True, sharey=True)
    for ax, layer in zip(axes.flat, layers):
        for (name, modality), (xs, ys) in sorted(series[layer].items(), key=lambda kv: _series_order(kv[0])):
            color = MODE_COLORS.get(name) if kind == "sab" else CANDIDATE_COLORS.get(name)
            style = "--" if modality == "region" else "-"
            label = name if kind == "sab" else f"{modality}<-{name}"
            ax.plot(xs, ys, style, color=color, lw=1.4, label=label)
        ax.set_title(f"L{layer}", fontsize=9)
        ax.set_ylim(0, 1)
        if taus:
            twin = ax.twinx()
            twin.plot(tau_steps, taus, ":", color="black", lw=1.0, label="tau")
            twin.set_yscale("log")
            twin.tick_params(labelsize=6)
            if ax in axes[:, -1]:
                twin.set_ylabel("tau", fontsize=7)
    for ax in axes.flat[len(layers):]:
        ax.set_axis_off()
    for ax in axes[:, 0]:
        ax.set_ylabel("mean probability", fontsize=8)
    for k, ax in enumerate(axes.flat[: len(layers)]):
        if k + ncol >= len(layers):  # the lowest panel of its column
            ax.set_xlabel("step", fontsize=8)
            ax.xaxis.set_tick_params(labelbottom=True)
    # Legend from every panel (with last3, layer 2 has fewer candidates than layer 3), one entry per label.
    seen: dict[str, object] = {}
    for ax in axes.flat[: len(layers)]:
        for h, lbl in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lbl, h)
    labels, handles = list(seen), list(seen.values())
    if taus:
        handles.append(plt.Line2D([], [], ls=":", color="black"))
        labels.append("tau (right axis)")
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, -0.02 - 0.03 * (len(labels) > 7)))
    what = "attention-mode" if kind == "sab" else "Switch-Input"
    fig.suptitle(title or f"{what} probabilities during training", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return _save(fig, path)


_ACTIVE_KEY = re.compile(r"^flops/active_sab/L(\d+)$")


def plot_active_paths(records: Union[PathLike, Iterable[Mapping]], path: PathLike, title: str = "") -> Path:
    """Active attention paths and FLOPs along training (paper Table 7's count, as it evolves).

    Left: mean active modes per sample of each layer (``flops/active_sab/L{i}``; a mode is active when
    its weight is above ``flops/active_threshold``) against step. Right: forward FLOPs per sample under
    the paper notion (``flops/paper``), relative to UNITER on the same batch (``flops/uniter``).
    """
    recs = read_metrics(records) if isinstance(records, (str, Path)) else list(records)
    recs = [r for r in recs if "step" in r and r.get("split", "train") == "train" and "flops/paper" in r]
    if not recs:
        raise ValueError("no 'flops/paper' keys with a 'step' in the metrics: nothing to plot")
    steps = [float(r["step"]) for r in recs]
    layers = sorted({int(m.group(1)) for r in recs for k in r for m in [_ACTIVE_KEY.match(k)] if m})
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    cmap = plt.get_cmap("viridis")
    for j, layer in enumerate(layers):
        ys = [float(r.get(f"flops/active_sab/L{layer}", float("nan"))) for r in recs]
        left.plot(steps, ys, color=cmap(j / max(len(layers) - 1, 1)), lw=1.3, label=f"L{layer}")
    left.set_xlabel("step", fontsize=8)
    left.set_ylabel("active modes per sample", fontsize=8)
    left.set_ylim(bottom=0)
    if layers:
        left.legend(fontsize=7, ncol=2, frameon=False)
    rel = [float(r["flops/paper"]) / float(r["flops/uniter"]) if r.get("flops/uniter") else float("nan") for r in recs]
    right.plot(steps, rel, color="black", lw=1.4)
    right.axhline(1.0, color="grey", ls=":", lw=1.0)
    right.set_xlabel("step", fontsize=8)
    right.set_ylabel("FLOPs / sample vs UNITER (paper notion)", fontsize=8)
    threshold = recs[0].get("flops/active_threshold")
    fig.suptitle(title or f"Active paths during training (weight > {threshold:g})" if threshold is not None
                 else "Active paths during training", fontsize=10)
    fig.tight_layout()
    return _save(fig, path, caveat=active_paths_caveat(recs))


def active_paths_caveat(records: Sequence[Mapping]) -> str:
    """Whether the active paths at the end of training are Gumbel noise around undecided switchers: layers
    whose logged mean mode probabilities (``routes/sab/L{i}/{mode}``, last record) are within the near-tie
    margin of each other, so several modes pass the activity threshold because the noise mixes them, not
    because the model learnt to use several. "" when every layer has a clear favourite (or none is logged)."""
    from switchbert.analysis.routes import NEAR_TIE_MARGIN

    last = next((r for r in reversed(list(records)) if any(_SAB_KEY.match(k) for k in r)), None)
    if last is None:
        return ""
    probs: dict[int, list[float]] = {}
    for k, v in last.items():
        m = _SAB_KEY.match(k)
        if m:
            probs.setdefault(int(m.group(1)), []).append(float(v))
    undecided = [layer for layer, p in sorted(probs.items())
                 if len(p) > 1 and sorted(p)[-1] - sorted(p)[-2] < NEAR_TIE_MARGIN]
    if not undecided:
        return ""
    where = ", ".join(f"L{layer}" for layer in undecided)
    return (f"At the last step {where}: mean mode probabilities within {NEAR_TIE_MARGIN:g} of each other, so their "
            "active paths are Gumbel noise around undecided switchers, not learnt sparsity")


def _series_order(key: tuple[str, str]) -> tuple:
    """Modes in Table 1 order, candidates in their set's order, text before regions."""
    name, modality = key
    order = list(MODE_COLORS) + list(CANDIDATE_COLORS)
    return (modality == "region", order.index(name) if name in order else len(order), name)


def plot_report_figures(stats: RouteStats, out_dir: PathLike, prefix: str) -> list[Path]:
    """The route diagram of the most frequent architecture, the mode bars and (with SIB) the input bars."""
    out_dir = Path(out_dir)
    paths: list[Path] = []
    label = f"{stats.model}" + (f" on {stats.task}" if stats.task else "")
    if not stats.layers:
        return paths
    if stats.top_architectures:
        paths.append(plot_route_diagram(stats.top_architectures[0], out_dir / f"{prefix}_route.png",
                                        f"Most frequent architecture: {label}", caveat=route_caveat(stats)))
    paths.append(plot_mode_frequencies(stats, out_dir / f"{prefix}_modes.png",
                                       f"Attention mode per layer: {label}"))
    if stats.has_sib:
        paths.append(plot_sib_frequencies(stats, out_dir / f"{prefix}_sib.png", f"Switch-Input choice: {label}"))
    return paths


__all__: Sequence[str] = ["MODE_COLORS", "plot_mode_frequencies", "plot_report_figures", "plot_route_diagram",
                          "plot_sib_frequencies", "plot_training_dynamics", "read_metrics"]
