"""Training and evaluation: the code that uses the library (models, heads, losses, data, metrics).

Modules, one concept each:
    config       the experiment YAML as typed dataclasses; dotted overrides; strict checks
    optim        AdamW parameter groups; warm-up then linear decay
    distributed  torchrun process groups (NCCL/gloo), the sharded sampler, gathering, rank 0 writes
    tasks        pretrain / vqa / retrieval / refexp: datasets, heads, loss, evaluation
    checkpoint   atomic best/ and last/ directories with the full training state
    metrics_log  metrics.jsonl (+ TensorBoard), route probabilities per layer
    trainer      the loop: setup, step, log, stop, checkpoint, end of epoch; accumulation, AMP, resume
    nonfinite    the NaN guard: a device-side watch of loss and gradient norm, the finite-state check
    progress     the bar or console lines, samples/s, time left
    evaluate     scoring a checkpoint; result records for reports

The commands `switchbert pretrain | finetune | evaluate | report` are ``switchbert.commands.train``.
"""

from switchbert.train.config import ConfigError, ExperimentConfig, load_config
from switchbert.train.preflight import check_paths

__all__ = ["ConfigError", "ExperimentConfig", "check_paths", "load_config"]
