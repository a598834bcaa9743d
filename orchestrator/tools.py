"""Tools: small declarative objects built from typed functions (name, description, inputs, one run).

A tool function takes a ``ToolContext`` first, then typed keyword arguments annotated with their
descriptions; its docstring is the description the LLM reads::

    @tool(card="Text2Image")
    def text2image(ctx: ToolContext, prompt: Annotated[str, "what to draw, in English"]) -> str:
        \"\"\"Generate an image from a text description.\"\"\"

``ImageName`` arguments are checked against the session's store before the function runs; every
argument the model invented, mistyped or forgot comes back as a ``ToolError`` whose message the model
can act on. The LangChain view of a tool is derived from ``Tool.schema()``, never written twice.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NewType, Protocol, Union, get_args, get_origin

from PIL import Image

from .cards import TOOL_NAME as TOOL_NAME_PATTERN
from .errors import ImageError, ToolError
from .images import ImageStore

ImageName = NewType("ImageName", str)

MAX_STRING = 2000  # longer string arguments are refused: no prompt needs more


@dataclass(frozen=True)
class Progress:
    """One progress report from a running tool (a diffusion step, a loading model, ...)."""

    tool: str
    message: str
    step: int | None = None
    total: int | None = None


class ModelAccess(Protocol):
    """What the model manager offers a tool: its models, loaded on first use, and calls batched across sessions."""

    def use(self, card: str) -> AbstractContextManager[Any]: ...

    def batched(self, card: str, item: Any, settings: Mapping[str, Any],
                progress: Callable[[int, int], None] | None) -> tuple[Any, int]: ...  # fmt: skip


@dataclass
class ToolContext:
    """Everything one tool call may touch: its session's images, its models, its card's options."""

    tool: str
    card: str
    images: ImageStore
    models: ModelAccess
    options: Mapping[str, Any] = field(default_factory=dict)
    report: Callable[[Progress], None] = lambda progress: None
    options_of: Callable[[str], Mapping[str, Any]] = lambda card: {}  # a dependency card's options
    args: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # what the reply should cite: URLs, "paper.pdf p. 3"
    knowledge: Any = None  # the Orchestrator's knowledge bases (orchestrator.knowledge.Shelf)
    knowledge_base: str | None = None  # the one the session picked, searched when the call names none
    batch: int = 1  # the calls whose items the last ``batched`` call made together, this one's included

    def model(self, card: str | None = None) -> AbstractContextManager[Any]:
        """``with ctx.model() as m:`` the tool's own model (or a dependency's), loaded and locked for use."""
        return self.models.use(card or self.card)

    def batched(self, item: Any, settings: Mapping[str, Any], progress: Callable[[int, int], None] | None = None,
                card: str | None = None) -> Any:  # fmt: skip
        """``model.generate_batch([item], **settings)[0]``, made in one call with the items of other sessions' calls
        of the card with the same ``settings`` that wait for its device meanwhile (orchestrator/batching.py).
        ``settings`` are what the items share (size, steps, guidance); ``progress(step, total)`` may be called
        from another thread. Like ``model``, never inside a ``with ctx.model()`` block."""
        result, self.batch = self.models.batched(card or self.card, item, settings, progress)
        return result

    def open(self, name: str) -> Image.Image:
        return self.images.open(name)

    def save(
        self, image: Image.Image, parents: list[str] | tuple[str, ...] = (), seed: int | None = None
    ) -> str:
        name = self.images.add(image, tool=self.tool, args=self.args, parents=list(parents), seed=seed)
        self.outputs.append(name)
        if seed is not None:
            self.seeds.append(seed)
        return name

    def cite(self, source: str) -> None:
        """A source this call read (a page's URL, a document's file and page): a reply that uses this call's
        result and names none of its sources gets them listed under it (``agent.cite_sources``)."""
        if source and source not in self.sources:
            self.sources.append(source)

    def progress(self, message: str, step: int | None = None, total: int | None = None) -> None:
        self.report(Progress(self.tool, message, step, total))

    def new_seed(self, seed: int | None) -> int:
        import secrets

        return int(seed) if seed is not None else secrets.randbelow(2**31)


@dataclass(frozen=True)
class Param:
    name: str
    kind: type | str  # str, int, float, bool, "image", or "enum"
    description: str
    required: bool
    default: Any = None
    choices: tuple[Any, ...] = ()
    nullable: bool = False

    def schema(self) -> dict[str, Any]:
        if self.kind == "image":
            out: dict[str, Any] = {
                "type": "string",
                "description": f"{self.description} (an image name such as image/1a2b3c4d.png)",
            }
        elif self.kind == "enum":
            out = {"type": "string", "enum": list(self.choices), "description": self.description}
        else:
            out = {"type": JSON_TYPES[self.kind], "description": self.description}
        if not self.required and self.default is not None:
            out["default"] = self.default
        return out


JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


@dataclass(frozen=True)
class Tool:
    name: str
    card: str
    description: str
    params: tuple[Param, ...]
    fn: Callable[..., str]

    def schema(self) -> dict[str, Any]:
        """JSON schema of the inputs (what OpenAI-style tool calling wants as ``parameters``)."""
        return {
            "type": "object",
            "properties": {p.name: p.schema() for p in self.params},
            "required": [p.name for p in self.params if p.required],
            "additionalProperties": False,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "card": self.card,
            "description": self.description,
            "inputs": self.schema(),
        }

    def validate(self, args: Any, images: ImageStore) -> dict[str, Any]:
        """Arguments as the function wants them, or a ToolError that says what to fix."""
        if args is None:
            args = {}
        if not isinstance(args, Mapping):
            raise ToolError(
                f"{self.name} takes named arguments ({self._signature()}), not {type(args).__name__}."
            )
        known = {p.name: p for p in self.params}
        unknown = [k for k in args if k not in known]
        if unknown:
            raise ToolError(f"{self.name} has no argument '{unknown[0]}'; it takes {self._signature()}.")
        out: dict[str, Any] = {}
        for param in self.params:
            if param.name not in args or (args[param.name] is None and not param.required):
                if param.required:
                    raise ToolError(
                        f"{self.name} needs the argument '{param.name}'; it takes {self._signature()}."
                    )
                out[param.name] = param.default
                continue
            out[param.name] = _coerce(self.name, param, args[param.name], images)
        return out

    def _signature(self) -> str:
        return ", ".join(p.name if p.required else f"{p.name}=…" for p in self.params)


def _coerce(tool: str, param: Param, value: Any, images: ImageStore) -> Any:
    where = f"{tool}: argument '{param.name}'"
    if param.kind == "image":
        try:
            return images.resolve(value)
        except ImageError as exc:
            raise ToolError(f"{where}: {exc}") from None
    if param.kind == "enum":
        if value not in param.choices:
            raise ToolError(f"{where} must be one of {', '.join(map(str, param.choices))}, got {value!r}.")
        return value
    if param.kind is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ToolError(f"{where} must be text, got {type(value).__name__}.")
        value = str(value)
        if len(value) > MAX_STRING:
            raise ToolError(f"{where} is {len(value)} characters long; keep it under {MAX_STRING}.")
        return value
    if param.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ToolError(f"{where} must be true or false, got {value!r}.")
    try:
        number = param.kind(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or (param.kind is int and isinstance(value, float) and not value.is_integer()):
        raise ToolError(
            f"{where} must be {'a whole number' if param.kind is int else 'a number'}, got {value!r}."
        )
    if isinstance(number, float) and number != number:  # NaN
        raise ToolError(f"{where} must be a number, got NaN.")
    return number


def tool(card: str, name: str | None = None) -> Callable[[Callable[..., str]], Tool]:
    """Build a ``Tool`` from a typed function (see the module docstring)."""

    def build(fn: Callable[..., str]) -> Tool:
        doc = inspect.cleandoc(fn.__doc__ or "")
        if not doc:
            raise TypeError(f"tool {fn.__name__} needs a docstring: it is the description the LLM reads")
        hints = typing.get_type_hints(fn, include_extras=True)
        signature = inspect.signature(fn)
        params = tuple(_param(fn.__name__, p, hints[p.name]) for p in list(signature.parameters.values())[1:])
        tool_name = name or fn.__name__
        if not TOOL_NAME_PATTERN.fullmatch(tool_name):
            raise TypeError(f"tool name {tool_name!r} must match {TOOL_NAME_PATTERN.pattern}")
        return Tool(tool_name, card, " ".join(doc.split()), params, fn)

    return build


def _param(fn_name: str, parameter: inspect.Parameter, hint: Any) -> Param:
    if get_origin(hint) is not Annotated:
        raise TypeError(f"{fn_name}({parameter.name}): annotate it as Annotated[type, 'description']")
    base, description = get_args(hint)[0], get_args(hint)[1]
    nullable = False
    if get_origin(base) in (Union, types.UnionType) and type(None) in get_args(base):
        nullable = True
        base = next(a for a in get_args(base) if a is not type(None))
    required = parameter.default is inspect.Parameter.empty
    default = None if required else parameter.default
    if base is ImageName:
        return Param(parameter.name, "image", description, required, default, nullable=nullable)
    if get_origin(base) is Literal:
        return Param(parameter.name, "enum", description, required, default, get_args(base), nullable)
    if base not in JSON_TYPES:
        raise TypeError(f"{fn_name}({parameter.name}): unsupported type {base!r}")
    return Param(parameter.name, base, description, required, default, nullable=nullable)


def iter_tools(modules: list[types.ModuleType]) -> Iterator[Tool]:
    for module in modules:
        yield from module.TOOLS
