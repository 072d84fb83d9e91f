"""What the demo's report says about Switch-BERT's routes: per-task route statistics and figures, the
switch probabilities during VQA fine-tuning, and the FLOPs along the VQA routes (docs/analysis.md)."""

from __future__ import annotations

from pathlib import Path

from switchbert.demo.sizes import TASKS


def analyse_routes(out_dir: Path, switch_runs: Path, data_dir: Path, samples: int) -> tuple[str, str]:
    """Route statistics and FLOPs of one fine-tuned Switch-BERT pipeline.

    Args:
        out_dir: the demo's directory; figures and ``routes.md`` go to ``out_dir/routes``.
        switch_runs: the pipeline's run directory (``<task>/`` per fine-tuning stage).
        data_dir: the synthetic benchmark the models were trained on.
        samples: held-out samples per task whose hard routes are collected.

    Returns:
        (the routes section, the FLOPs table), as markdown.
    """
    from switchbert.analysis.flops import flops_over_run
    from switchbert.analysis.plots import plot_training_dynamics, read_metrics
    from switchbert.analysis.report import routes_section_markdown, write_report
    from switchbert.analysis.routes import collect_routes
    from switchbert.models import load_pretrained, resolve_checkpoint
    from switchbert.train.tasks.manifest import task_batches

    stats, config = {}, None
    for task in TASKS:
        model = load_pretrained(resolve_checkpoint(switch_runs / task))
        config = model.config
        split = "test" if task == "retrieval" else "val"
        batches, _ = task_batches(data_dir, task, split, batch_size=64, max_samples=samples)
        stats[task] = collect_routes(model, batches, "cpu", max_samples=samples, task=task)
    files = write_report(out_dir / "routes", stats, config=config)

    # Per task: routes, the most frequent one, and how sure the switchers are (near-ties said in words).
    lines = [routes_section_markdown(stats, files.figures, figure_prefix="routes/")]
    # How the attention-mode probabilities moved while tau annealed, during VQA fine-tuning.
    dynamics = plot_training_dynamics(read_metrics(switch_runs / "vqa" / "metrics.jsonl"),
                                      out_dir / "routes" / "vqa_dynamics_sab.png", "sab")
    lines += ["### training dynamics (VQA fine-tuning)\n",
              "Mean switch probability of each mode per layer against the step, with the Gumbel-softmax "
              "temperature tau:\n", f"![vqa_dynamics](routes/{dynamics.name})\n"]
    # Table 7 style: the paper's pretraining (2.77M pairs x 10 epochs) along the VQA routes, beside the
    # fixed baselines at this model's sizes.
    flops_md = flops_over_run(stats["vqa"], config, samples=2_770_000, epochs=10).to_markdown()
    return "\n".join(lines), flops_md
