"""Int8 weight storage for the diffusion networks: about half their VRAM, compute stays in fp16.

The eight ControlNets, the inpainting and pix2pix UNets and the SD1.5 UNet are 10.5 GB of fp16 weights,
three quarters of the whole tool set; no two of them share a tensor, so sharing cannot shrink them further.
``quantize_`` stores each large Linear and Conv2d weight as int8 with one fp16 scale per output channel
(symmetric, round to nearest) and turns it back into the compute dtype on every use, through a
``torch.nn.utils.parametrize`` parametrization: the module's code, ``torch.compile`` and CUDA-graph capture
see an ordinary ``weight``. Biases, norms, embeddings and small layers stay as they are.

The cost is accuracy, not speed: a UNet output moves by about 1% (relative L2, measured on the H200 with
random weights), so images keep their composition but differ in detail from fp16 ones; a compiled step
takes about 10% longer (docs/benchmarks.md). The layers share one parametrized class per layer type, so the
compiled regions serve every block of a class as they do in float (``_share_class``). It is off by default:
``--int8-weights``
(``Orchestrator(int8_weights=True)``, card option ``int8_weights: true``); placement then counts these
networks at ``INT8_SIZE`` of their fp16 size (orchestrator/cards.py).
"""

from __future__ import annotations

import torch
from torch.nn.utils import parametrize

MIN_NUMEL = 4096  # smaller weights (and every bias and norm) are not worth a scale per channel


class Int8Weight(torch.nn.Module):
    """The parametrization: ``weight = int8 * scale``, in the scale's dtype (the model's compute dtype)."""

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return stored.to(self.scale.dtype) * self.scale


def channel_scales(weight: torch.Tensor) -> torch.Tensor:
    """One scale per output channel: the channel's largest magnitude maps to 127."""
    flat = weight.detach().reshape(weight.shape[0], -1).float()
    scale = flat.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    return scale.to(weight.dtype).reshape((-1,) + (1,) * (weight.dim() - 1))


def quantize_tensor(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (weight.detach().float() / scale.float()).round().clamp(-127, 127).to(torch.int8)


def quantize_(model: torch.nn.Module, min_numel: int = MIN_NUMEL) -> int:
    """Store the weights of ``model``'s Linear and Conv2d layers as int8, in place; returns how many."""
    count = 0
    for module in list(model.modules()):
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) or parametrize.is_parametrized(module):
            continue
        weight = module.weight
        if weight.numel() < min_numel or not weight.dtype.is_floating_point:
            continue
        scale = channel_scales(weight)
        module.weight = torch.nn.Parameter(quantize_tensor(weight, scale), requires_grad=False)
        parametrize.register_parametrization(module, "weight", Int8Weight(scale), unsafe=True)
        _share_class(module)
        count += 1
    if count:
        model.requires_grad_(False)
    return count


_SHARED_CLASSES: dict[type, type] = {}


def _share_class(module: torch.nn.Module) -> None:
    """One ``ParametrizedLinear`` (``ParametrizedConv2d``) class for every layer instead of one per layer.

    ``register_parametrization`` gives each module a class of its own, whose ``weight`` property reads the
    module's own parametrization. Dynamo guards on a module's class, so every block of a compiled region class
    failed the guards of the block before and compiled again: 12 graphs for the tiny UNet's 12 blocks instead of
    8 in float. The property is the same on each of those classes, so one class per base serves all. (So
    torch's ``remove_parametrizations``, which deletes the property from the class, must not be used on these
    layers; nothing here does.)
    """
    own = type(module)
    module.__class__ = _SHARED_CLASSES.setdefault(own.__bases__[0], own)


def quantized_layers(model: torch.nn.Module) -> int:
    """How many layers of ``model`` store int8 weights."""
    return sum(
        1
        for m in model.modules()
        if parametrize.is_parametrized(m, "weight") and m.parametrizations.weight.original.dtype == torch.int8
    )


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers as stored (an int8 weight is one byte per value)."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
