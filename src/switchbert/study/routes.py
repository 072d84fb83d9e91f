"""What a trained switching model's routes look like on one task: the most frequent route and its
share, how sure each switcher is (near-ties said in words, ``analysis.routes``), and the per-sample
spread of the switch probabilities p.

The spread is the standard deviation of p across the held-out samples, per switcher and option (as
benchmarks/study_causes.py measures it): a switcher that routes per sample has a large one; a
per-dataset route (every sample the same p) has ~0 whatever its mean. Results are cached beside the
stage's run (``study_routes.json``), so a resumed study does not recompute them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

ROUTES_FILE = "study_routes.json"
SPLITS: dict[str, str] = {"vqa": "val", "retrieval": "test", "refexp": "val"}
"""The held-out split whose routes are read, per recipe."""


def analyse_stage(run_dir: Path, data_dir: Path, recipe: str, samples: int) -> dict[str, Any]:
    """Routes and per-sample p of the model fine-tuned in ``run_dir`` (cached in ``run_dir/study_routes.json``).

    Returns:
        ``{"samples", "routes", "top_share", "top_route", "note", "near_ties": ["L2 SAB", ...],
        "switchers": [{"name", "options", "mean_p", "std_p", "margin", "near_tie"}, ...]}``.
    """
    from switchbert.io import atomic_write_text

    cache = Path(run_dir) / ROUTES_FILE
    if cache.is_file():
        return json.loads(cache.read_text())
    out = _analyse(Path(run_dir), Path(data_dir), recipe, samples)
    atomic_write_text(cache, json.dumps(out, indent=1))
    return out


def _analyse(run_dir: Path, data_dir: Path, recipe: str, samples: int) -> dict[str, Any]:
    from switchbert.analysis.routes import RouteCollector
    from switchbert.models import load_pretrained, resolve_checkpoint
    from switchbert.train.tasks.manifest import task_batches

    model = load_pretrained(resolve_checkpoint(run_dir))
    model.eval()
    batches, _ = task_batches(data_dir, recipe, SPLITS[recipe], batch_size=64, max_samples=samples)
    collector = RouteCollector(model.config)
    sab: list[list[torch.Tensor]] = []  # per layer, (b, M) per batch
    sib: list[list[torch.Tensor]] = []  # per layer, (b, 2, C) per batch
    with torch.no_grad():
        for item in batches:
            batch = item[0] if isinstance(item, (tuple, list)) else item
            left = samples - collector.num_samples
            if left <= 0:
                break
            if batch.batch_size > left:
                batch = batch.select(torch.arange(left))
            output = model(batch)
            collector.update_output(output)
            for i, r in enumerate(output.routes):
                if len(sab) <= i:
                    sab.append([]), sib.append([])
                sab[i].append(r.sab_probs.float())
                if r.sib_probs is not None:
                    sib[i].append(r.sib_probs.float())
    stats = collector.stats(task=recipe)
    conf = {(layer, name): c for layer, name, c in stats.switcher_confidence()}
    switchers = []
    for i, layer in enumerate(stats.layers):
        if len(layer.modes) > 1 and sab[i]:
            switchers.append(_spread(f"L{layer.layer} SAB", torch.cat(sab[i]), conf.get((layer.layer, "SAB"))))
        if layer.sib_candidates and sib[i]:
            p = torch.cat(sib[i])
            for m, modality in enumerate(("text", "region")):
                name = f"SIB {modality}"
                switchers.append(_spread(f"L{layer.layer} {name}", p[:, m], conf.get((layer.layer, name))))
    top = stats.top_architectures[0] if stats.top_architectures else None
    return {"samples": stats.num_samples, "routes": stats.num_architectures,
            "top_share": top.share if top else None, "top_route": top.signature if top else "",
            "note": stats.confidence_note(), "near_ties": [f"L{layer} {name}" for layer, name, _ in stats.near_ties()],
            "switchers": switchers}


def _spread(name: str, p: torch.Tensor, conf: Any) -> dict[str, Any]:
    """One switcher's p over the samples (S, K): mean and std per option, margin and near-tie."""
    return {"name": name, "options": int(p.shape[-1]),
            "mean_p": [round(float(x), 3) for x in p.mean(0)],
            "std_p": [round(float(x), 3) for x in (p.std(0) if p.shape[0] > 1 else torch.zeros(p.shape[-1]))],
            "margin": None if conf is None else round(conf.mean_margin, 3),
            "near_tie": bool(conf is not None and conf.near_tie)}


__all__ = ["ROUTES_FILE", "SPLITS", "analyse_stage"]
