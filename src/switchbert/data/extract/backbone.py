"""ResNet C4 backbone of the bottom-up-attention detector, with frozen batch norm and a Caffe stem.

Dimension legend: N images, C channels, H x W the padded input, stride 16 at res4's output.

Module names follow detectron2 (``stem.conv1.norm``, ``res4.22.conv3``, ``shortcut``), so the
py-bottom-up-attention weights load by name (keymaps.py). Two things differ from torchvision's
ResNet and matter for the released weights: the stride sits in the first 1x1 conv of a block
(``STRIDE_IN_1X1``, MSRA/Caffe ResNet), and the stem's max pool is Caffe's (no padding, ceil mode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from switchbert.data.extract.config import DetectorConfig


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (buffers, never trained).

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``, folded into one scale and
    shift per channel. detectron2's FrozenBatchNorm2d; same numbers as ``nn.BatchNorm2d`` in eval.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


class ConvNorm(nn.Conv2d):
    """A bias-free conv followed by frozen batch norm: detectron2's ``Conv2d(norm=...)``, so its keys
    are ``<name>.weight`` and ``<name>.norm.{weight,bias,running_mean,running_var}``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                 eps: float = 1e-5) -> None:
        super().__init__(cin, cout, kernel, stride, padding, dilation=dilation, bias=False)
        self.norm = FrozenBatchNorm2d(cout, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class Bottleneck(nn.Module):
    """1x1 (stride) -> 3x3 (dilation) -> 1x1, plus a projection shortcut when the shape changes."""

    def __init__(self, cin: int, bottleneck: int, cout: int, stride: int, dilation: int, eps: float) -> None:
        super().__init__()
        self.shortcut = ConvNorm(cin, cout, 1, stride, eps=eps) if (cin != cout or stride != 1) else None
        self.conv1 = ConvNorm(cin, bottleneck, 1, stride, eps=eps)  # stride in the 1x1: MSRA ResNet
        self.conv2 = ConvNorm(bottleneck, bottleneck, 3, 1, padding=dilation, dilation=dilation, eps=eps)
        self.conv3 = ConvNorm(bottleneck, cout, 1, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


def make_stage(num_blocks: int, cin: int, bottleneck: int, cout: int, stride: int, dilation: int,
               eps: float) -> nn.Sequential:
    """``num_blocks`` bottlenecks; only the first changes stride and width."""
    blocks = [Bottleneck(cin if i == 0 else cout, bottleneck, cout, stride if i == 0 else 1, dilation, eps)
              for i in range(num_blocks)]
    return nn.Sequential(*blocks)


class Stem(nn.Module):
    """7x7 stride-2 conv, ReLU, Caffe max pool (3x3, stride 2, no padding, ceil mode): stride 4."""

    def __init__(self, cout: int, eps: float) -> None:
        super().__init__()
        self.conv1 = ConvNorm(3, cout, 7, 2, padding=3, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        # Caffe's pooling rounds the output size up and pads nothing; detectron2's default (padding 1,
        # floor) gives the same size on even inputs but shifts every window by a pixel.
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)


class ResNetC4(nn.Module):
    """Stem and res2-res4: (N, 3, H, W) -> (N, 4 * res2_channels, ~H/16, ~W/16)."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        eps = cfg.bn_eps
        self.stem = Stem(cfg.stem_channels, eps)
        cin, width, cout = cfg.stem_channels, cfg.bottleneck_channels, cfg.res2_channels
        for i, name in enumerate(("res2", "res3", "res4")):
            self.add_module(name, make_stage(cfg.blocks[i], cin, width, cout, 1 if i == 0 else 2, 1, eps))
            cin, width, cout = cout, width * 2, cout * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res4(self.res3(self.res2(self.stem(x))))


def build_res5(cfg: DetectorConfig) -> nn.Sequential:
    """res5 as the RoI head: (R, 4 * res2, P, P) -> (R, 8 * res2, P, P) with dilation 2 and stride 1.

    The VG model keeps res5 at stride 1 (py-bottom-up-attention's ``RES5HALVE: False``): the first
    block's stride becomes 1 and every 3x3 conv is dilated by 2, so a 14x14 RoI stays 14x14.
    """
    stride = 1 if cfg.res5_dilation == 2 else 2
    return make_stage(cfg.blocks[3], cfg.res2_channels * 4, cfg.bottleneck_channels * 8, cfg.res2_channels * 8,
                      stride, cfg.res5_dilation, cfg.bn_eps)
