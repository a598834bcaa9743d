"""fp8 compute for the diffusion networks on Ada and Hopper GPUs (``--fp8``), with torchao.

Each Linear layer of a UNet or ControlNet whose sides are multiples of 16 (the attention projections and
feed-forwards: most of the UNet's matmul work at 512 px and above) gets float8 e4m3 weights, and its input is
cast to float8 on every call: torchao's ``Float8DynamicActivationFloat8WeightConfig``, the configuration diffusers
documents as ``TorchAoConfig("float8dq_e4m3")``. Scales are one per output row (``PerRow``) for bfloat16 networks
and one per tensor for float16 ones, the default (torchao's row-wise kernels take bfloat16 only). The matmuls then run on the tensor cores' fp8 path
(``torch._scaled_mm``). Convolutions, norms, embeddings and the VAE stay fp16. The casts are separate kernels
unless ``torch.compile`` fuses them, which the fast path's background compile does (in the serving process:
the compile helper rebuilds modules from their configs, which an fp8 one is not).

It is off by default and changes images slightly: the same seed gives the same composition, the details differ
by fp8 rounding (docs/benchmarks.md has the measured speed and difference). It needs CUDA compute capability
8.9 or newer (L4/L40/RTX 40xx, H100/H200, B200) and ``pip install 'visual-orchestrator[fp8]'`` (torchao).
"""

from __future__ import annotations

from typing import Any

MIN_CAPABILITY = (8, 9)
MULTIPLE = 16  # torch._scaled_mm needs both sides of the weight to be multiples of 16
MIN_NUMEL = 4096  # smaller layers cost more in casts than fp8 saves
BLOCKWISE = (128, 128)  # no SD1.5 network has a Linear of this shape
INSTALL = "pip install 'visual-orchestrator[fp8]'"


def unsupported(device: str) -> str | None:
    """Why ``--fp8`` cannot run on ``device``, in one sentence; None when it can."""
    if not device.startswith("cuda"):
        return f"--fp8 needs an NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper); {device} is not one."
    import torch

    if not torch.cuda.is_available():
        return (
            "--fp8 needs an NVIDIA GPU of compute capability 8.9 or newer, and this machine has no CUDA GPU."
        )
    capability = torch.cuda.get_device_capability(torch.device(device))
    if capability < MIN_CAPABILITY:
        name = torch.cuda.get_device_name(torch.device(device))
        return (f"--fp8 needs compute capability 8.9 or newer (Ada, Hopper); {device} is a {name} "
                f"({capability[0]}.{capability[1]}). Start without --fp8, or try --int8-weights.")  # fmt: skip
    try:
        import torchao  # noqa: F401
    except ImportError:
        return f"--fp8 needs torchao: {INSTALL}."
    return None


def eligible(module: Any) -> bool:
    """Whether a layer gets fp8: a Linear whose weight has sides of multiples of 16 and at least 4,096 values."""
    import torch

    if not isinstance(module, torch.nn.Linear) or not module.weight.dtype.is_floating_point:
        return False
    out_features, in_features = module.weight.shape
    if (
        out_features,
        in_features,
    ) == BLOCKWISE:  # torchao reads its one per-tensor scale as a 128x128 block scale
        return False
    return out_features % MULTIPLE == 0 and in_features % MULTIPLE == 0 and module.weight.numel() >= MIN_NUMEL


def quantize_(model: Any) -> int:
    """Put fp8 compute into ``model``'s eligible Linear layers, in place; returns how many."""
    import torch
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor
    from torchao.quantization import quantize_ as torchao_quantize

    layers = [module for module in model.modules() if eligible(module)]
    if not layers:
        return 0
    granularity = PerRow() if layers[0].weight.dtype == torch.bfloat16 else PerTensor()
    config = Float8DynamicActivationFloat8WeightConfig(granularity=granularity)
    torchao_quantize(model, config, filter_fn=lambda module, _name: eligible(module))
    return len(layers)
