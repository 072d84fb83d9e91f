"""From raw images to region features: the bottom-up-attention detector in plain PyTorch (docs/data.md)."""
