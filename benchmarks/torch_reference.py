"""The BReG-Net of ``bregflax.nn.models`` in PyTorch, for throughput comparisons only.

Built from a flax ``BReGNet``'s fields (stage_sizes, widths, shortcut, stem_convs,
stem_stride, stem_pool, num_classes), it computes the same function: ``copy_flax_to_torch``
loads a flax model's params and batch_stats, and the ``check_*`` functions verify that
both frameworks agree (parameter count, output shape, eval- and train-mode outputs).

Layout: inputs are NCHW tensors (or NCHW in channels_last memory format). Flax's SAME
padding pads asymmetrically (after > before) for stride-2 convs on even sizes, unlike
torch's symmetric ``padding=1``, so stride-2 convs pad explicitly.

BatchNorm: torch momentum 0.1 is flax momentum 0.9; eps 1e-5 both. Train-mode outputs use
the biased batch variance in both; only the running-variance *update* differs (torch uses
the unbiased estimate), which changes no output compared here.

PyTorch is an optional extra (``pip install -e ".[bench]"``); bregflax never imports this.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bregflax.nn.models import num_params


def _h1(x: torch.Tensor) -> torch.Tensor:
    return -F.softplus(-x)


def _h2(x: torch.Tensor) -> torch.Tensor:
    ax = x.abs()
    return ax * torch.atan(ax) - 0.5 * torch.log1p(x * x)


SHORTCUTS = {"identity": lambda x: x, "h1": _h1, "h2": _h2, "h3": torch.atan}


class SameConv2d(nn.Conv2d):
    """Bias-free conv with flax/TF SAME padding (asymmetric when it must be)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        symmetric = stride == 1 and kernel % 2 == 1
        super().__init__(
            cin, cout, kernel, stride, padding=kernel // 2 if symmetric else 0, bias=False
        )
        self.same_pad = not symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same_pad:
            x = F.pad(x, _same_padding(x.shape[-2:], self.kernel_size[0], self.stride[0]))
        return super().forward(x)


def _same_padding(size, kernel: int, stride: int) -> tuple[int, int, int, int]:
    pads = []
    for n in size:
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return (left, right, top, bottom)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


class TorchBReGBlock(nn.Module):
    """relu(H(s) + F(x)); F = conv3x3(stride)-BN-ReLU-conv3x3-BN; s = x or 1x1 conv + BN."""

    def __init__(self, cin: int, filters: int, shortcut: str, stride: int):
        super().__init__()
        self.conv1 = SameConv2d(cin, filters, 3, stride)
        self.bn1 = _bn(filters)
        self.conv2 = SameConv2d(filters, filters, 3)
        self.bn2 = _bn(filters)
        self.project = stride != 1 or cin != filters
        if self.project:
            self.proj_conv = SameConv2d(cin, filters, 1, stride)
            self.proj_bn = _bn(filters)
        self.h = SHORTCUTS[shortcut]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = self.proj_bn(self.proj_conv(x)) if self.project else x
        return F.relu(self.h(s) + y)


class TorchBReGNet(nn.Module):
    def __init__(
        self,
        stage_sizes,
        widths,
        shortcut: str = "h3",
        stem_convs: int = 1,
        stem_stride: int = 1,
        stem_pool: bool = False,
        num_classes: int = 7,
        in_channels: int = 1,
    ):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {sorted(SHORTCUTS)}, got {shortcut!r}")
        self.stem = nn.ModuleList()
        self.stem_bn = nn.ModuleList()
        cin = in_channels
        for i in range(stem_convs):
            self.stem.append(SameConv2d(cin, widths[0], 3, stem_stride if i == 0 else 1))
            self.stem_bn.append(_bn(widths[0]))
            cin = widths[0]
        self.stem_pool = stem_pool
        self.blocks = nn.ModuleList()
        self.block_names = []
        for i, (size, width) in enumerate(zip(stage_sizes, widths, strict=True)):
            for j in range(size):
                stride = 2 if i > 0 and j == 0 else 1
                self.blocks.append(TorchBReGBlock(cin, width, shortcut, stride))
                self.block_names.append(f"stage{i}_block{j}")
                cin = width
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn in zip(self.stem, self.stem_bn, strict=True):
            x = F.relu(bn(conv(x)))
        if self.stem_pool:
            x = F.max_pool2d(F.pad(x, _same_padding(x.shape[-2:], 3, 2), value=-math.inf), 3, 2)
        for block in self.blocks:
            x = block(x)
        return self.classifier(x.mean(dim=(2, 3)))


def from_flax(model: Any, in_channels: int = 1) -> TorchBReGNet:
    """The torch twin of a flax ``BReGNet`` (head "classes" only), float32."""
    if model.head != "classes":
        raise ValueError(f"only head='classes' is mirrored in torch, got {model.head!r}")
    return TorchBReGNet(
        tuple(model.stage_sizes),
        tuple(model.widths),
        shortcut=model.shortcut,
        stem_convs=model.stem_convs,
        stem_stride=model.stem_stride,
        stem_pool=model.stem_pool,
        num_classes=model.num_classes,
        in_channels=in_channels,
    )


# --------------------------------------------------------------------------- weights


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


def _copy_conv(conv: nn.Conv2d, params) -> None:
    conv.weight.data.copy_(_t(params["kernel"]).permute(3, 2, 0, 1))  # HWIO -> OIHW


def _copy_bn(bn: nn.BatchNorm2d, params, stats) -> None:
    bn.weight.data.copy_(_t(params["scale"]))
    bn.bias.data.copy_(_t(params["bias"]))
    bn.running_mean.copy_(_t(stats["mean"]))
    bn.running_var.copy_(_t(stats["var"]))


def copy_flax_to_torch(flax_variables, torch_model: TorchBReGNet) -> TorchBReGNet:
    """Loads flax ``{"params", "batch_stats"}`` into ``torch_model`` in place (and returns it)."""
    params, stats = flax_variables["params"], flax_variables["batch_stats"]
    with torch.no_grad():
        for i, (conv, bn) in enumerate(zip(torch_model.stem, torch_model.stem_bn, strict=True)):
            _copy_conv(conv, params[f"stem_conv{i}"])
            _copy_bn(bn, params[f"stem_bn{i}"], stats[f"stem_bn{i}"])
        for name, block in zip(torch_model.block_names, torch_model.blocks, strict=True):
            p, s = params[name], stats[name]
            for layer in ("1", "2"):
                _copy_conv(getattr(block, f"conv{layer}"), p[f"conv{layer}"])
                _copy_bn(getattr(block, f"bn{layer}"), p[f"bn{layer}"], s[f"bn{layer}"])
            if block.project != ("proj_conv" in p):
                raise ValueError(f"{name}: projection mismatch between flax and torch")
            if block.project:
                _copy_conv(block.proj_conv, p["proj_conv"])
                _copy_bn(block.proj_bn, p["proj_bn"], s["proj_bn"])
        torch_model.classifier.weight.copy_(_t(params["classifier"]["kernel"]).T)
        torch_model.classifier.bias.copy_(_t(params["classifier"]["bias"]))
    return torch_model


def count_params(torch_model: nn.Module) -> int:
    return sum(p.numel() for p in torch_model.parameters())


# --------------------------------------------------------------------------- checks


def check_equivalence(
    flax_model: Any,
    flax_variables,
    images: np.ndarray,
    rtol: float = 1e-4,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Compares flax and torch on ``images`` (B, H, W, C) with the same weights.

    Returns params (flax, torch), shapes, max abs differences, and ``ok`` per check.
    """
    images = np.asarray(images, np.float32)
    torch_model = copy_flax_to_torch(flax_variables, from_flax(flax_model, images.shape[-1]))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    out: dict[str, Any] = {
        "flax_params": num_params(flax_variables["params"]),
        "torch_params": count_params(torch_model),
    }
    out["params_ok"] = out["flax_params"] == out["torch_params"]
    for mode, train in (("eval", False), ("train", True)):
        if train:
            flax_out, _ = flax_model.apply(
                flax_variables, images, train=True, mutable=["batch_stats"]
            )
        else:
            flax_out = flax_model.apply(flax_variables, images, train=False)
        expected = np.asarray(flax_out["logits"])
        torch_model.train(train)
        with torch.no_grad():
            got = torch_model(x).numpy()
        out[f"{mode}_shape"] = (tuple(expected.shape), tuple(got.shape))
        out[f"{mode}_shape_ok"] = expected.shape == got.shape
        diff = float(np.max(np.abs(expected - got))) if expected.shape == got.shape else math.inf
        out[f"{mode}_max_abs_diff"] = diff
        out[f"{mode}_ok"] = bool(
            expected.shape == got.shape and np.allclose(got, expected, rtol=rtol, atol=atol)
        )
    out["ok"] = all(v for k, v in out.items() if k.endswith("_ok"))
    return out


# --------------------------------------------------------------------------- steps


def make_optimizer(
    model: nn.Module, learning_rate: float, momentum: float, weight_decay: float
) -> torch.optim.SGD:
    """SGD with momentum; weight decay on conv and linear weights only, as in bregflax."""
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.ndim > 1]
    rest = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.ndim > 1)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0}]
    return torch.optim.SGD(groups, lr=learning_rate, momentum=momentum)


def train_step(model: nn.Module, optimizer, images: torch.Tensor, labels: torch.Tensor):
    """Forward (train-mode BN) + cross-entropy + backward + SGD step; returns the loss."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss.detach()


def infer_step(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.inference_mode():
        return model(images)
