"""The demo's results and ``report.md``: mean ± std per task in the layout of the paper's Table 3,
what guessing scores, the verdict over seeds in words, and the route and FLOPs sections.

The report is a list of sections, each a small function of the results; the fixed prose is in
constants beside them.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from switchbert.demo.sizes import TASKS, DemoSize
from switchbert.metrics.aggregate import mean_std

Scores = dict[str, dict[str, dict[str, float]]]
"""{task: {split: {metric: value in %}}}."""

HEADLINE: dict[str, list[tuple[str, str, str]]] = {  # (column title, split, metric) per task
    "vqa": [("VQA acc (val)", "val", "accuracy")],
    "retrieval": [("IR R@1", "test", "ir_r1"), ("TR R@1", "test", "tr_r1")],
    "refexp": [("RefExp acc (testA)", "testA", "accuracy"), ("RefExp acc (testB)", "testB", "accuracy")],
}
"""The results table's columns."""


@dataclass
class DemoResult:
    """What a demo produced: where its report is, and every metric of every (model, seed)."""

    out_dir: Path
    report: Path
    # model/task/split/metric, of the first seed
    metrics: dict[str, Scores] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    # model -> one task/split/metric dict per seed, in the order of ``seeds``
    per_seed: dict[str, list[Scores]] = field(default_factory=dict)
    jobs: int = 1  # (model, seed) pipelines that ran at a time
    # model -> per seed, VQA val accuracy per question type (the evaluator's perQuestionType)
    vqa_by_type: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def values(self, model: str, task: str, split: str, metric: str) -> list[float]:
        """The metric over the seeds (those that have it)."""
        return [m[task][split][metric] for m in self.per_seed.get(model, [])
                if metric in m.get(task, {}).get(split, {})]


def chance_levels(data_dir: Path, manifest: dict[str, Any]) -> Scores:
    """What guessing scores, in the results table's layout: {task: {split: {metric: %}}}.

    VQA: the text-only prior the generator measured (the most common training answer per question
    text). Retrieval: R@1 of a random ranking, 1 / images (IR) and an image's captions / captions of
    the split (TR). RefExp: the expected accuracy of picking one of the sample's regions at random.
    The datasets are the tasks' own (``Task.dataset``), as training and evaluation read them.
    """
    from switchbert.train.tasks import build_task
    from switchbert.train.tasks.manifest import manifest_config

    chance: Scores = {}
    stats = manifest.get("stats", {})
    if "text_only_vqa_accuracy" in stats:
        chance["vqa"] = {"val": {"accuracy": 100.0 * stats["text_only_vqa_accuracy"]}}
    test = build_task(manifest_config(data_dir, "retrieval", manifest=manifest)).dataset("test")
    if test.num_images:
        chance["retrieval"] = {"test": {"ir_r1": 100.0 / test.num_images,
                                        "tr_r1": 100.0 * (test.num_captions / test.num_images) / test.num_captions}}
    refexp = build_task(manifest_config(data_dir, "refexp", manifest=manifest))
    chance["refexp"] = {}
    for split in ("testA", "testB"):
        ds = refexp.dataset(split)
        hits = []
        for i in range(len(ds)):
            _, labels = ds.collate([ds[i]])
            real = labels.region_mask[0]
            hits.append(float((labels.iou[0][real] > 0.5).float().mean()) if real.any() else 0.0)
        if hits:
            chance["refexp"][split] = {"accuracy": 100.0 * sum(hits) / len(hits)}
    return chance


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}"


def _mean(values: list[float]) -> float:
    return mean_std(values)[0]


def _std(values: list[float]) -> float:
    """Sample standard deviation (n - 1); 0 for one value (no spread to judge against)."""
    return mean_std(values)[1] if len(values) > 1 else 0.0


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{_mean(values):.1f}" if len(values) == 1 else f"{_mean(values):.1f} ± {_std(values):.1f}"


def compare_models(result: DemoResult, chance: Scores, a: str = "Switch-BERT", b: str = "UNITER") -> str:
    """In words, per headline metric: does ``a`` beat ``b`` beyond the seeds' spread, and does each
    beat its prior? "Beyond the spread" means the means differ by more than the two standard
    deviations added (a rough rule for a handful of seeds, not a significance test)."""
    lines = []
    n = len(result.seeds)
    for task in TASKS:
        for title, split, metric in HEADLINE[task]:
            va, vb = result.values(a, task, split, metric), result.values(b, task, split, metric)
            if not va or not vb:
                continue
            ma, mb = _mean(va), _mean(vb)
            spread = _std(va) + _std(vb)
            diff = ma - mb
            if n < 2:
                verdict = (f"{a} {ma:.1f} vs {b} {mb:.1f}: one seed, so no spread to judge the "
                           f"{abs(diff):.1f}-point gap against")
            elif abs(diff) > spread:
                winner, loser = (a, b) if diff > 0 else (b, a)
                verdict = (f"{winner} beats {loser} by {abs(diff):.1f} points, beyond the spread "
                           f"(std {_std(va):.1f} + {_std(vb):.1f})")
            else:
                verdict = (f"{a} {ma:.1f} vs {b} {mb:.1f}: the {abs(diff):.1f}-point gap is within the "
                           f"spread (std {_std(va):.1f} + {_std(vb):.1f}), so neither beats the other")
            prior = chance.get(task, {}).get(split, {}).get(metric)
            if prior is not None:
                above = [m for m, v in ((a, ma), (b, mb)) if v > prior + max(spread, 1e-9)]
                verdict += (f"; prior {prior:.1f}: " + (" and ".join(above) + " above it" if above
                                                        else "neither model clearly above it"))
            lines.append(f"- **{title}**: {verdict}.")
    lines += collapse_warnings(result, chance)
    if n < 2:
        # One seed's table says nothing about the spread: at the default size a second seed moved
        # Switch-BERT's retrieval R@1 from 23.4 to 2.4 (BENCHMARKS.md, "The demo").
        lines.append("- **One seed per model**: these numbers carry no spread. Short runs from random weights "
                     "can land far apart on another seed (retrieval most of all); run `--seeds 2` or more "
                     "before reading a difference between the models.")
    return "\n".join(lines)


def collapse_warnings(result: DemoResult, chance: Scores) -> list[str]:
    """Report lines for models that did not learn to use the image: VQA less than 3 points above the
    text-only prior, retrieval R@1 below twice chance (docs/training.md, "collapse to the text prior")."""
    out = []
    for model in result.per_seed:
        for task, split, metric, what in (("vqa", "val", "accuracy", "less than 3 points above the text-only prior: "
                                           "it answers from the question alone (collapse to the text prior)"),
                                          ("retrieval", "test", "ir_r1", "below twice chance: its scores barely "
                                           "tell the pairs apart (a loss near ln 4 means tied scores)")):
            values, prior = result.values(model, task, split, metric), chance.get(task, {}).get(split, {}).get(metric)
            if not values or prior is None:
                continue
            mean = _mean(values)
            bad = mean <= prior + 3.0 if task == "vqa" else mean < 2.0 * prior
            if bad:
                out.append(f"- **Warning**: {model}'s {task} score ({mean:.1f}) is {what}; see docs/training.md, "
                           f"\"Learning rates for small models\".")
    return out


def results_table(result: DemoResult, chance: Scores) -> str:
    """Markdown: one row per model (mean ± std over seeds per headline column), then chance."""
    cols = [c for task in TASKS for c in HEADLINE[task]]
    rows = ["| model | " + " | ".join(title for title, _, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for model_name in result.per_seed:
        vals = [_mean_std(result.values(model_name, task, split, metric))
                for task in TASKS for _, split, metric in HEADLINE[task]]
        rows.append(f"| {model_name} | " + " | ".join(vals) + " |")
    vals = [_fmt(chance.get(task, {}).get(split, {}).get(metric))
            for task in TASKS for _, split, metric in HEADLINE[task]]
    rows.append("| *chance / text-only prior* | " + " | ".join(vals) + " |")
    return "\n".join(rows)


def vqa_type_table(result: DemoResult, manifest: dict[str, Any]) -> str:
    """Markdown: VQA val accuracy per question type and model (mean ± std over seeds), beside each
    type's text-only prior; a model less than 3 points above a type's prior is marked "not above its prior"."""
    priors = manifest.get("stats", {}).get("text_only_vqa_accuracy_by_type", {})
    types = sorted({t for runs in result.vqa_by_type.values() for run in runs for t in run})
    if not types:
        return ""
    rows = ["| model | " + " | ".join(types) + " |", "|---" * (len(types) + 1) + "|"]
    for model, runs in result.vqa_by_type.items():
        cells = []
        for t in types:
            values = [run[t] for run in runs if t in run]
            cell = _mean_std(values)
            if values and t in priors and _mean(values) <= 100.0 * priors[t] + 3.0:
                cell += " (not above its prior)"
            cells.append(cell)
        rows.append(f"| {model} | " + " | ".join(cells) + " |")
    rows.append("| *text-only prior* | " + " | ".join(_fmt(100.0 * priors[t]) if t in priors else "-"
                                                     for t in types) + " |")
    return "\n".join(rows)


# -------------------------------------------------------------------------------------- sections
def intro_section(result: DemoResult, size_name: str, size: DemoSize, bert_dir: Optional[Path],
                  manifest: dict[str, Any]) -> str:
    init = "initialised from the offline all-MiniLM-L6-v2 BERT weights" if bert_dir else "randomly initialised"
    return f"""# switchbert demo report

**What these numbers are.** Two models trained and evaluated on the *synthetic* benchmark that ships
with switchbert (`switchbert synth`): {size.images} generated scenes, {size.feat_dim}-d region features from a
fixed random "detector", captions, VQA questions with 10 noisy answers each, and referring expressions.
Both models are `{size.preset}` encoders ({init}),
pretrained with MLM + MRC-KL + ITM and fine-tuned with the same recipe; **UNITER** is the same encoder with
joint attention only and no Switch-Input Block. Each model trained {len(result.seeds)} time(s) (seeds
{", ".join(str(x) for x in result.seeds)}), demo size `{size_name}`; region features at abstraction
{manifest.get("abstraction", 1.0)} and clutter {manifest.get("clutter", 1.0)}; VQA question types
{", ".join(manifest.get("question_types", []))} (docs/data.md).

**What they are not.** Not the paper's numbers, and not evidence for or against its claims: the data
are synthetic, the models small, training short, and the seeds few. For the paper's setting see
`configs/`.

{regime_note(manifest)}"""


def regime_note(manifest: dict[str, Any]) -> str:
    """Which misalignment regime the demo's data sit in, what the paper predicts there, and where the
    study that varies it is."""
    a, c = float(manifest.get("abstraction", 1.0)), float(manifest.get("clutter", 1.0))
    if a == 0 and c == 0:
        regime = ("**Which regime.** Abstraction 0 and clutter 0: region features are word-level codes (one "
                  "coordinate per shape, colour and size) with no duplicate or background regions, so text and "
                  "regions sit at the same semantic level (*aligned*). That is where the paper's argument for "
                  "switching (the two modalities sit at different semantic levels) predicts no gain, so this "
                  "table does not test the paper's claim.")
    else:
        regime = (f"**Which regime.** Abstraction {a:g} and clutter {c:g}: region features moved from word-level "
                  "codes towards entangled embeddings, among duplicate and background regions (*misaligned*), the "
                  "setting where the paper's argument predicts switching to help.")
    return (regime + " Whether switching helps, and when, is what `switchbert study` measures: the four models "
            "(UNITER, SAB-only, SIB-only, Switch-BERT) across misalignment levels, task families and pretraining "
            "budgets, several seeds, with paired intervals (docs/study.md).")


READING_THE_TABLES = """The last row of each table is what guessing gets: for VQA the best text-only rule (the most common training answer
for each question text), for retrieval a random ranking, for RefExp a random region of the image. A
model only shows that it uses the image where it beats that row."""


def results_section(result: DemoResult, chance: Scores, manifest: dict[str, Any]) -> str:
    oracle = manifest.get("stats", {}).get("scene_oracle_vqa_accuracy")
    return f"""## Results

Mean ± sample standard deviation over the seeds, in the layout of the paper's Table 3.

{results_table(result, chance)}

{compare_models(result, chance)}

VQA by question type (val accuracy; the evaluator's `eval/vqa_accuracy_val.json`):

{vqa_type_table(result, manifest)}

{READING_THE_TABLES}

VQA accuracy is the official VQA metric (normalised answers, leave-one-out over the 10 annotators), in %.
Retrieval is Recall@1 over every (caption, image) pair of the test split (IR: images per caption; TR:
captions per image). RefExp accuracy: the top-scoring region overlaps the target box with IoU > 0.5.
An oracle that reads the answer off the scene gets {_fmt(None if oracle is None else 100 * oracle)}% VQA accuracy (below 100% only where the
simulated annotators disagree). At the default size the models are trained for minutes from random
weights on word-level region features; `--size large` trains the MiniLM-initialised model longer on
more abstract features."""


def routes_section(route_md: str) -> str:
    return f"""## Routes Switch-BERT learned

Each sample's route: at every layer the attention mode (SS self-self, SC self-cross, CS cross-self,
J joint) and, from layer 2 on, the input each modality took (`out` previous output, `mid` previous
post-attention state, `in` previous input). Hard routes at inference, on held-out samples.

{route_md}"""


def flops_section(flops_md: str) -> str:
    return f"""## FLOPs

Along the routes Switch-BERT took on the VQA validation samples, beside the fixed baselines at the
same sizes and token counts, scaled to the paper's pretraining (2.77M pairs x 10 epochs). The full
per-task tables are in `routes/routes.md`.

{flops_md}"""


def run_section(result: DemoResult) -> str:
    secs = result.seconds
    return f"""## Run

- Wall time: data {secs.get('data', 0):.0f}s, Switch-BERT {secs.get('Switch-BERT', 0):.0f}s, UNITER
  {secs.get('UNITER', 0):.0f}s (each summed over its seeds), analysis {secs.get('analysis', 0):.0f}s, total
  {secs.get('total', 0):.0f}s, with {result.jobs} (model, seed) pipeline(s) running at a time (`--jobs`).
- Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}.
- Runs (checkpoints, metrics.jsonl, results.jsonl): `runs/`; data: `data/`; route report: `routes/`.
"""


def write_report(result: DemoResult, size_name: str, size: DemoSize, bert_dir: Optional[Path],
                 manifest: dict[str, Any], route_md: str, flops_md: str) -> None:
    """Writes ``result.report`` (chance levels from the data under ``result.out_dir / "data"``)."""
    from switchbert.io import atomic_write_text

    chance = chance_levels(result.out_dir / "data", manifest)
    sections = [intro_section(result, size_name, size, bert_dir, manifest), results_section(result, chance, manifest),
                routes_section(route_md), flops_section(flops_md), run_section(result)]
    atomic_write_text(result.report, "\n\n".join(sections))
