"""Regions compiled ahead of time and saved whole, so that a restarted process traces nothing before it serves.

Torch's mega-cache (artifacts.py) holds inductor's compiled code, but a new process still has dynamo trace every
region again to find it (6.7 s for the SD1.5 UNet, 1.4 s for the VAE decoder on an H100). Dynamo's ahead-of-time
compile (``torch.compile(...).aot_compile``, torch >= 2.11; inductor.py turns on the flag 2.11 needs for it)
returns a compiled function with its guards and bytecode that serializes as bytes; loading those bytes skips
tracing altogether.

Each (block class and configuration, input signature) a compiled module forward ran is recorded with the shapes
of its inputs.
``export`` compiles each recorded one ahead (its code comes from inductor's cache: the live compile put it
there) and returns the bytes; ``load`` turns bytes from the compiled-code file back into functions, and
``call`` runs a region through one when its signature and guards match (else the caller compiles as usual).

    ahead = PrecompiledRegions()
    ahead.record(key, compiled, block, args, kwargs)   # RegionForward, on the compile of a new signature
    blobs = ahead.export()                             # as warmup ends, under the GPU-work lock
    ahead.load(blobs)                                  # a new process, before its first compile
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_MISS = object()
_AHEAD = threading.local()  # .on: this thread compiles a region ahead (``_compile_ahead``)


def guard_filter(entries: Any) -> list[bool]:
    """Dynamo's guard filter for the fast path's compiles (inductor.py passes it to ``torch.compile``): a live
    compile keeps every guard; one ahead keeps those that can be saved, as ``aot_compile``'s own filter would
    (that one is set only where none is given, and it misses the guards that check by id underneath, such as
    the one on the code of an attention processor's ``__call__``: saving them raises a PackageError)."""
    if not getattr(_AHEAD, "on", False):
        return [True] * len(entries)
    from torch._dynamo.guards import CheckFunctionManager

    unsaved = set(CheckFunctionManager.UNSUPPORTED_SERIALIZATION_GUARD_TYPES)
    return [not (g.is_global or g.guard_type in unsaved or unsaved.intersection(g.derived_guard_types))
            for g in entries]  # fmt: skip


def supported(compiled: Any) -> bool:
    """Whether this compiled function (a region's ``torch.compile`` result) can be compiled ahead and saved."""
    import torch

    loads = hasattr(torch.compiler, "load_compiled_function")
    return loads and callable(getattr(compiled, "aot_compile", None))


def region_key(block: Any, args: tuple, kwargs: dict) -> str | None:
    """A region's class and input signature as text, the same in every process (the file's key for it); None
    when an input is neither a tensor nor a value with a faithful ``repr`` (it could not be rebuilt)."""
    import torch
    from torch.utils._pytree import tree_flatten

    leaves, spec = tree_flatten((args, kwargs))
    parts: list[str] = [f"{type(block).__module__}.{type(block).__qualname__}", f"block={block_digest(block)}",
                        str(spec), f"inference={torch.is_inference_mode_enabled()}"]  # fmt: skip
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            kind = "/inference" if leaf.is_inference() else ""  # the guards check it
            parts.append(f"{tuple(leaf.shape)}/{tuple(leaf.stride())}/{leaf.dtype}/{leaf.device}{kind}")
        elif leaf is None or isinstance(leaf, (bool, int, float, str)):
            parts.append(f"{type(leaf).__name__}:{leaf!r}")
        else:
            return None
    return "|".join(parts)


# block -> (its first parameter's device, dtype, grad flag and strides; its digest)
_DIGESTS: weakref.WeakKeyDictionary[Any, tuple[Any, str]] = weakref.WeakKeyDictionary()


def block_digest(block: Any) -> str:
    """A digest of what a block's guards read beside its inputs: its submodules' configuration (the module
    ``repr``), every submodule's plain public attributes (numbers, strings, flags and tuples of them, such as
    ``output_scale_factor`` or ``training``) and every parameter's and buffer's shape, strides, dtype, device and
    grad flag. Blocks of one class with the same inputs but another configuration (a shortcut conv, another group
    count, another output scale, half precision) get keys of their own, so one's code is never tried on another,
    and each is compiled ahead. Made once per block and again when its first parameter moves or changes dtype (a
    call costs a lookup, not a walk of the block); a change it misses (an attribute set afterwards) costs a
    misfit, which the guards catch, never a wrong answer."""
    import hashlib

    first = next(block.parameters(), None)
    token = None if first is None else (first.device, first.dtype, first.requires_grad, first.stride())
    cached = _DIGESTS.get(block)
    if cached is not None and cached[0] == token:
        return cached[1]
    tensors = [*block.named_parameters(), *block.named_buffers()]
    meta = ";".join(f"{name}:{tuple(t.shape)}/{t.stride()}/{t.dtype}/{t.device}/{t.requires_grad}"
                    for name, t in tensors)  # fmt: skip
    attributes = ";".join(f"{name}.{attr}={value!r}" for name, module in block.named_modules()
                          for attr, value in sorted(vars(module).items())
                          if not attr.startswith("_") and _plain(value))  # fmt: skip
    digest = hashlib.sha1(f"{block!r}|{meta}|{attributes}".encode()).hexdigest()[:16]
    _DIGESTS[block] = (token, digest)
    return digest


def _plain(value: Any) -> bool:
    """A value whose ``repr`` is the same in every process: what a guard on a module attribute compares."""
    if isinstance(value, (tuple, list)):
        return all(_plain(item) for item in value)
    return value is None or isinstance(value, (bool, int, float, str))


@dataclass
class _Example:
    """What ``export`` needs to compile a region ahead: its compiled function, a block of the class (weakly
    held), and its inputs as shapes and values."""

    compiled: Any
    block: Any  # weakref.ref to the block
    leaves: list[Any]  # ("tensor", shape, stride, dtype, device, is an inference tensor) or ("value", v)
    spec: Any
    inference: bool


class PrecompiledRegions:
    """The regions compiled ahead in this process (``export``) or loaded from the compiled-code file (``load``)."""

    def __init__(self) -> None:
        self.functions: dict[str, Any] = {}  # key -> a loaded compiled function
        self.blobs: dict[str, bytes] = {}  # key -> its serialized form (loaded or exported), saved as is
        self._examples: dict[str, _Example] = {}
        self.unsupported = False  # a region was compiled that this torch cannot compile ahead
        self._outside: set[str] = set()  # keys whose loaded guards read as outside inference mode (``_fits``)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.functions)

    def has(self, key: str | None) -> bool:
        return key is not None and key in self.functions

    def record(self, key: str | None, compiled: Any, block: Any, args: tuple, kwargs: dict) -> None:
        """Remember a region signature the live compile just ran, to compile it ahead at ``export``."""
        import torch
        from torch.utils._pytree import tree_flatten

        if key is None or key in self.blobs or key in self._examples:
            return
        if not supported(compiled):
            self.unsupported = True  # this torch has no aot_compile: a restart traces the regions again
            return
        leaves, spec = tree_flatten((args, kwargs))
        described = [("tensor", tuple(x.shape), tuple(x.stride()), x.dtype, x.device, x.is_inference())
                     if isinstance(x, torch.Tensor) else ("value", x) for x in leaves]  # fmt: skip
        with self._lock:
            self._examples[key] = _Example(compiled, weakref.ref(block), described, spec,
                                           torch.is_inference_mode_enabled())  # fmt: skip

    def call(self, key: str | None, block: Any, args: tuple, kwargs: dict) -> Any:
        """The region's output from its function compiled ahead, or ``_MISS`` (no such function, or its guards
        do not hold for this block: it is then dropped, and the live compile takes over)."""
        function = self.functions.get(key) if key is not None else None
        if function is None:
            return _MISS
        if not self._fits(key, function, block, args, kwargs):
            log.info("a region compiled ahead does not fit this %s (%s); it compiles as usual",
                     type(block).__name__, _failed_guard(function, block, args, kwargs))  # fmt: skip
            with self._lock:
                self.functions.pop(key, None)
                self.blobs.pop(key, None)
            return _MISS
        return function(block, *args, **kwargs)

    def _fits(self, key: str, function: Any, block: Any, args: tuple, kwargs: dict) -> bool:
        """Whether the function's guards hold for this call. torch 2.11 loads a region compiled in inference mode
        with tensor guards that read as if compiled outside it (2.14 keeps the mode): there they are checked
        outside it, grad off. Nothing goes unchecked: the key holds the mode and which inputs are inference
        tensors."""
        import torch

        if key not in self._outside:
            if function.guard_check(block, *args, **kwargs):
                return True
            if not torch.is_inference_mode_enabled():
                return False
        with torch.inference_mode(False), torch.no_grad():
            fits = function.guard_check(block, *args, **kwargs)
        if fits:
            self._outside.add(key)  # this torch reads them so: the next call checks them so at once
        return fits

    def export(self) -> dict[str, bytes]:
        """Every recorded region compiled ahead and serialized, with the loaded ones: key -> bytes. A region that
        cannot be is left out with one log line (a restart then traces it)."""
        with self._lock:
            examples = dict(self._examples)
        for key, example in examples.items():
            block = example.block()
            if block is None:  # its model was unloaded since; another of its class may record it again
                continue
            try:
                blob = _compile_ahead(example, block)
            except Exception as exc:
                log.warning("could not compile %s ahead (%s: %s); a restart traces it again",
                            type(block).__name__, type(exc).__name__, str(exc)[:200])  # fmt: skip
                blob = None
            with self._lock:
                self._examples.pop(key, None)
                if blob is not None:
                    self.blobs[key] = blob
        with self._lock:
            return dict(self.blobs)

    def load(self, blobs: Mapping[str, bytes]) -> int:
        """Functions from serialized regions (the compiled-code file's); how many loaded. One that cannot be
        loaded (another torch build changed the format) is skipped with one log line."""
        from torch._dynamo.aot_compile import AOTCompiledFunction

        loaded = 0
        for key, blob in blobs.items():
            try:
                function = AOTCompiledFunction.deserialize(blob)
                function.disable_guard_check()  # ``call`` checks them, once
            except Exception as exc:
                log.warning("a region compiled ahead could not be loaded (%s: %s); it compiles as usual",
                            type(exc).__name__, str(exc)[:200])  # fmt: skip
                continue
            with self._lock:
                self.functions[key], self.blobs[key] = function, blob
            loaded += 1
        return loaded


def _failed_guard(function: Any, block: Any, args: tuple, kwargs: dict) -> str:
    """The guard that failed, as dynamo words it; in inference mode also as checked outside it, which is how
    ``_fits`` last checked (torch 2.11 reads every inference tensor's guard as failing inside it)."""
    import torch

    local = function.prepare_f_locals(block, *args, **kwargs)

    def failed() -> str:  # the guard's code without the source line dynamo appends after "#"
        parts = function._artifacts.guard_manager.check_verbose(local).verbose_code_parts
        return "; ".join(part.split("  #")[0].strip() for part in parts)

    words = failed()
    if torch.is_inference_mode_enabled():
        with torch.inference_mode(False), torch.no_grad():
            words += f"; outside inference mode: {failed()}"
    return words[:500]


def _compile_ahead(example: _Example, block: Any) -> bytes:
    import torch
    from torch.utils._pytree import tree_unflatten

    def rebuilt(
        leaf: tuple,
    ) -> Any:  # tracing reads shapes and the kind of tensor (guards check it), not values
        if leaf[0] != "tensor":
            return leaf[1]
        with torch.inference_mode(leaf[5]):
            return torch.empty_strided(leaf[1], leaf[2], dtype=leaf[3], device=leaf[4])

    leaves = [rebuilt(leaf) for leaf in example.leaves]
    args, kwargs = tree_unflatten(leaves, example.spec)
    # The block's own attributes go into its guards' saved state, and its patched forward (a RegionForward, which
    # holds locks) cannot be saved: the class's forward stands in while it compiles, under the callers' locks.
    patched = block.__dict__.pop("forward", _MISS)
    _AHEAD.on = True
    try:
        with torch.inference_mode() if example.inference else torch.no_grad():
            function = example.compiled.aot_compile(((block, *args), kwargs))
        return type(function).serialize(function).serialized_data
    finally:
        _AHEAD.on = False
        if patched is not _MISS:
            block.__dict__["forward"] = patched


def missed(value: Any) -> bool:
    return value is _MISS
