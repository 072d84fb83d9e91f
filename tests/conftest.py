"""Test-wide settings: never touch the network, keep CPU threads modest."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

# Tiny test models are dominated by threading overhead; one thread is faster and steadier on 2 cores.
torch.set_num_threads(1)
