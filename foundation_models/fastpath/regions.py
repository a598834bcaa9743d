"""Regional compilation: diffusers' repeated blocks compiled one class at a time, shared by every module.

The UNet's, the ControlNet's and the VAE's resnets and transformer blocks (``REGIONS``) are compiled one
compiled function per block class and input signature, so a second module (the ControlNet, the inpainting or
pix2pix UNet) finds its blocks compiled by the first. The glue between blocks runs eagerly, inside the same CUDA
graph. A module without such blocks is compiled whole. A region compiled ahead (precompiled.py: loaded from the
compiled-code file) runs without dynamo tracing it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .graphs import MAX_GRAPHS
from .precompiled import PrecompiledRegions, missed, region_key
from .torch_state import TORCH_GLOBALS, holding

REGIONS = ("ResnetBlock2D", "Transformer2DModel")
DYNAMIC_REGIONS = False  # symbolic sizes cost the convolutions their layout and compile longer


class RegionCompiler:
    """Compiles modules' forwards region by region, and remembers which (block class, input signature) it has
    compiled (a job whose blocks are all among them needs no compile helper)."""

    def __init__(self, compile_fn: Callable[..., Callable[..., Any]], classes: tuple[str, ...] = REGIONS,
                 dynamic: bool = DYNAMIC_REGIONS):  # fmt: skip
        self.compile_fn = compile_fn  # compile_fn(function, dynamic=...) -> compiled
        self.classes = classes
        self.dynamic = dynamic  # regions compiled for symbolic sizes: once per class, not per signature
        self.compiled_signatures: set[Any] = set()
        self.ahead = PrecompiledRegions()  # loaded from the compiled-code file, or to be saved in it
        self._by_class: dict[type, Callable[..., Any]] = {}
        self._calling = threading.local()  # .on: this thread is inside a compiled module forward

    def blocks(self, module: Any) -> list[Any]:
        return outermost(module, self.classes) if self.classes else []

    def compiled_forward(self, forward: Callable[..., Any]) -> Callable[..., Any]:
        """``forward`` (a module's bound forward) with its regions compiled, or compiled whole."""
        from .inductor import raise_recompile_limit

        raise_recompile_limit(MAX_GRAPHS)
        blocks = self.blocks(forward.__self__)
        if not blocks:
            return holding(TORCH_GLOBALS, self.compile_fn(forward, dynamic=False))
        for block in blocks:
            cls = type(block)
            if cls not in self._by_class:
                self._by_class[cls] = self.compile_fn(cls.forward, dynamic=self.dynamic)
            if "forward" not in block.__dict__:
                block.forward = RegionForward(block, self._by_class[cls], self)

        def with_compiled_regions(*args: Any, **kwargs: Any) -> Any:
            with self.calling():
                return forward(*args, **kwargs)

        return with_compiled_regions

    @contextmanager
    def calling(self) -> Iterator[None]:
        """Within the block, this thread's calls to patched blocks go to their compiled forward."""
        previous = getattr(self._calling, "on", False)
        self._calling.on = True
        try:
            yield
        finally:
            self._calling.on = previous

    def in_compiled_call(self) -> bool:
        return getattr(self._calling, "on", False)

    def compiled_here(
        self, eager: Callable[..., Any], example: list[Any], spec: Any, inference: bool
    ) -> bool:
        """Whether every region that ``eager`` (a module's forward) calls on these inputs is compiled already
        (one eager call tells)."""
        import torch
        from torch.utils._pytree import tree_unflatten

        blocks = self.blocks(eager.__self__)
        if not blocks:
            return False
        seen: set[Any] = set()
        me = threading.get_ident()

        def note(block: Any, args: tuple, kwargs: dict) -> None:
            if threading.get_ident() == me:  # not a serving thread's call meanwhile
                seen.add(((type(block), region_signature(args, kwargs)), region_key(block, args, kwargs)))

        hooks = [block.register_forward_pre_hook(note, with_kwargs=True) for block in blocks]
        try:
            args, kwargs = tree_unflatten(example, spec)
            with torch.inference_mode() if inference else torch.no_grad():
                eager(*args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
        return all(signature in self.compiled_signatures or self.ahead.has(key) for signature, key in seen)


class RegionForward:
    """A block's forward: its class's compiled forward inside a compiled module forward (that thread only), its
    own eager forward everywhere else (eager calls and graphs of them, other threads)."""

    def __init__(self, block: Any, compiled: Callable[..., Any], owner: RegionCompiler):
        self.block, self.compiled, self.owner = block, compiled, owner

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.owner.in_compiled_call():
            ahead = self.owner.ahead
            key = region_key(self.block, args, kwargs)
            with TORCH_GLOBALS:  # this call may trace and compile: no model building meanwhile
                out = ahead.call(key, self.block, args, kwargs)
                if missed(out):
                    out = self.compiled(self.block, *args, **kwargs)
                    ahead.record(key, self.compiled, self.block, args, kwargs)
            self.owner.compiled_signatures.add((type(self.block), region_signature(args, kwargs)))
            return out
        return type(self.block).forward(self.block, *args, **kwargs)


def outermost(module: Any, classes: tuple[str, ...]) -> list[Any]:
    """The submodules of these classes that are not inside another one."""
    found: list[tuple[str, Any]] = []
    for name, sub in module.named_modules():
        if type(sub).__name__ in classes and not any(name.startswith(f"{outer}.") for outer, _ in found):
            found.append((name, sub))
    return [sub for _, sub in found]


def region_signature(args: tuple, kwargs: dict) -> Any:
    """What a compiled region is specialized on: tensor shapes, dtypes, devices and strides, and other values."""
    import torch
    from torch.utils._pytree import tree_flatten

    leaves, spec = tree_flatten((args, kwargs))
    key: list[Any] = [spec]
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            key.append((tuple(leaf.shape), leaf.dtype, leaf.device, leaf.stride()))
        else:
            try:
                hash(leaf)
                key.append((type(leaf), leaf))
            except TypeError:
                key.append(type(leaf))
    return tuple(key)
