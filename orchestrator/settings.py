"""Runtime settings: one frozen object, built once at the edge and passed down.

The command line (flags), ``gradio_app.py`` and Python callers (``Orchestrator(..., settings=...)`` or its
keyword arguments) build a :class:`Settings` with :meth:`Settings.from_env`, which reads the project's
environment variables once; nothing below the edge reads ``os.environ`` for these. The order is: an explicit
argument, then the environment, then the default.

| field | environment | flag |
|---|---|---|
| ``cache_dir`` | ``VISUAL_ORCHESTRATOR_CACHE`` | |
| ``knowledge_root`` | ``VISUAL_ORCHESTRATOR_KNOWLEDGE`` | ``knowledge --root`` |
| ``fast`` | ``VISUAL_ORCHESTRATOR_FAST=0`` | ``--no-fast`` |
| ``compile`` | ``VISUAL_ORCHESTRATOR_COMPILE=0`` | ``--no-compile`` |
| ``compile_helper`` | ``VISUAL_ORCHESTRATOR_COMPILE_HELPER=0`` | ``--no-compile-helper`` |
| ``compiled_file`` | ``VISUAL_ORCHESTRATOR_COMPILED`` (default: ``cache_dir/compiled/<GPU>-torch<version>.bin``) | ``--compiled FILE`` |
| ``openai_api_key``, ``openai_base_url``, ``openai_model`` | ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OPENAI_MODEL`` | ``--model`` |
| ``discover_local_llm`` | ``VISUAL_ORCHESTRATOR_DISCOVER=0`` | |
| ``refine_rounds`` | ``VISUAL_ORCHESTRATOR_REFINE`` | ``--refine N`` |
| ``max_batch`` | ``VISUAL_ORCHESTRATOR_MAX_BATCH`` | ``--max-batch N`` |
| ``batch_wait_ms`` | ``VISUAL_ORCHESTRATOR_BATCH_WAIT_MS`` | ``--batch-wait-ms MS`` |
| ``api_key`` | ``VISUAL_ORCHESTRATOR_API_KEY`` | ``--api-key`` (serve) |
| ``persona_dir`` | ``VISUAL_ORCHESTRATOR_PERSONAS`` (else ``$XDG_CONFIG_HOME/visual-orchestrator/personas``) | |
| ``web_search`` | ``VISUAL_ORCHESTRATOR_WEB_SEARCH`` (searxng, duckduckgo, brave, tavily; unset: off) | |
| ``web_search_url`` | ``VISUAL_ORCHESTRATOR_WEB_SEARCH_URL`` (the SearxNG instance; another backend's endpoint) | |
| ``web_search_key`` | ``VISUAL_ORCHESTRATOR_WEB_SEARCH_KEY``, else ``BRAVE_API_KEY`` / ``TAVILY_API_KEY`` | |
| ``web_allow`` | ``VISUAL_ORCHESTRATOR_WEB_ALLOW`` (comma-separated networks and host names) | |

Variables that belong to other libraries (``CUDA_VISIBLE_DEVICES``, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``,
``TORCHINDUCTOR_CACHE_DIR``) stay theirs: they are read where the code mirrors that library.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

WeightsMode = Literal["hub", "tiny"]

CACHE_ENV = "VISUAL_ORCHESTRATOR_CACHE"
KNOWLEDGE_ENV = "VISUAL_ORCHESTRATOR_KNOWLEDGE"
COMPILED_ENV = "VISUAL_ORCHESTRATOR_COMPILED"
SWITCHES = {  # field -> the variable that turns it off with 0/false/no/off
    "fast": "VISUAL_ORCHESTRATOR_FAST",
    "compile": "VISUAL_ORCHESTRATOR_COMPILE",
    "compile_helper": "VISUAL_ORCHESTRATOR_COMPILE_HELPER",
    "discover_local_llm": "VISUAL_ORCHESTRATOR_DISCOVER",
}
OPENAI_ENV = {"openai_api_key": "OPENAI_API_KEY", "openai_base_url": "OPENAI_BASE_URL",
              "openai_model": "OPENAI_MODEL"}  # fmt: skip
OFF = ("0", "false", "no", "off")
WEB_ENV = {"web_search": "VISUAL_ORCHESTRATOR_WEB_SEARCH", "web_search_url": "VISUAL_ORCHESTRATOR_WEB_SEARCH_URL",
           "web_search_key": "VISUAL_ORCHESTRATOR_WEB_SEARCH_KEY"}  # fmt: skip
WEB_ALLOW_ENV = "VISUAL_ORCHESTRATOR_WEB_ALLOW"
MAX_BATCH_ENV = "VISUAL_ORCHESTRATOR_MAX_BATCH"
BATCH_WAIT_ENV = "VISUAL_ORCHESTRATOR_BATCH_WAIT_MS"
SEARCH_KEY_ENV = {"brave": "BRAVE_API_KEY", "tavily": "TAVILY_API_KEY"}  # the names those services document


def cache_root() -> Path:
    """The project's cache folder as the environment says (for callers at the edge that hold no Settings)."""
    return default_cache_dir(os.environ)


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    value = environ.get(CACHE_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "visual-orchestrator"


@dataclass(frozen=True)
class Settings:
    """Everything an Orchestrator's parts need to know about how they run."""

    weights: WeightsMode = "hub"  # tiny: seeded tiny checkpoints built locally (tests, offline smoke runs)
    model_dir: Path | None = None  # --model-dir: local checkpoints as DIR/org/name, before the HF cache
    cache_dir: Path = field(default_factory=lambda: default_cache_dir({}))
    session_root: Path | None = None  # where sessions are saved; None: cache_dir/sessions
    knowledge_root: Path | None = None  # where knowledge bases live; None: cache_dir/knowledge
    fast: bool = True  # CUDA-graph replay of the diffusion networks and BLIP (--no-fast)
    compile: bool = True  # the background torch.compile of their blocks (--no-compile)
    compile_helper: bool = True  # compile each job first in a helper process (--no-compile-helper)
    int8_weights: bool = False  # UNets and ControlNets stored int8 (--int8-weights)
    fp8: bool = False  # their Linear layers compute in fp8 (--fp8: torchao, compute capability >= 8.9)
    # the compiled-code file loaded before the first compile and written by warmup (--compiled FILE); None: the
    # one for this GPU model and torch under cache_dir/compiled
    compiled_file: Path | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model: str | None = None
    inductor_cache_dir: Path | None = None  # the user's TORCHINDUCTOR_CACHE_DIR; None: under cache_dir
    discover_local_llm: bool = True  # --brain auto probes 127.0.0.1 for Ollama, LM Studio, llama.cpp, vLLM
    local_llm_ports: tuple[int, ...] = (11434, 1234, 8080, 8000)  # in the order they are preferred
    persona_dir: Path | None = None  # the user's own personas (*.yaml) beside the shipped ones
    api_key: str | None = field(default=None, repr=False)  # the key `serve` requires of its clients
    refine_rounds: int = 0  # --refine N: check each generated image, retry up to N times (0: off)
    # --max-batch N: calls of one tool with the same settings that wait for a busy device run as one batch of at
    # most N (1: one at a time); a card's max_batch option lowers it for that card (orchestrator/batching.py)
    max_batch: int = 8
    batch_wait_ms: float = 0.0  # --batch-wait-ms: how long a call may wait for the last batch's members
    web_search: str | None = (
        None  # the WebSearch card's backend: searxng, duckduckgo, brave, tavily; None: off
    )
    web_search_url: str | None = None  # the SearxNG instance (or another backend's endpoint)
    web_search_key: str | None = field(default=None, repr=False)  # Brave's or Tavily's API key
    # networks (10.0.0.0/8) and host names (wiki.corp.example, *.corp.example) web tools may reach though private
    web_allow: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.weights not in ("hub", "tiny"):
            raise ValueError(f"weights mode must be 'hub' or 'tiny', got {self.weights!r}")
        for name in (
            "model_dir",
            "cache_dir",
            "session_root",
            "knowledge_root",
            "inductor_cache_dir",
            "persona_dir",
            "compiled_file",
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value).expanduser())
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ValueError(f"max_batch must be a whole number of at least 1, got {self.max_batch!r}")
        if not self.batch_wait_ms >= 0:
            raise ValueError(f"batch_wait_ms must be 0 or more, got {self.batch_wait_ms!r}")
        if isinstance(self.web_allow, str):
            object.__setattr__(self, "web_allow", split_list(self.web_allow))
        object.__setattr__(self, "web_allow", tuple(self.web_allow))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from the environment (``os.environ`` unless given), then ``overrides`` that are not None."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "cache_dir": default_cache_dir(env),
            "knowledge_root": env.get(KNOWLEDGE_ENV) or None,
        }
        for name, variable in SWITCHES.items():
            values[name] = env.get(variable, "1").strip().lower() not in OFF
        for name, variable in OPENAI_ENV.items():
            values[name] = env.get(variable) or None
        for name, variable in WEB_ENV.items():
            values[name] = env.get(variable, "").strip() or None
        backend = (values["web_search"] or "").lower()
        values["web_search_key"] = (
            values["web_search_key"] or env.get(SEARCH_KEY_ENV.get(backend, ""), "") or None
        )
        values["web_allow"] = split_list(env.get(WEB_ALLOW_ENV, ""))
        chosen = env.get("TORCHINDUCTOR_CACHE_DIR")
        values["inductor_cache_dir"] = chosen if chosen and not _is_torch_default(chosen) else None
        values["api_key"] = env.get("VISUAL_ORCHESTRATOR_API_KEY") or None
        values["compiled_file"] = env.get(COMPILED_ENV) or None
        refine = env.get("VISUAL_ORCHESTRATOR_REFINE", "0").strip()
        values["refine_rounds"] = int(refine) if refine.isdigit() else 0
        max_batch = env.get(MAX_BATCH_ENV, "").strip()
        values["max_batch"] = int(max_batch) if max_batch.isdigit() and int(max_batch) >= 1 else 8
        values["batch_wait_ms"] = _milliseconds(env.get(BATCH_WAIT_ENV, ""))
        config_home = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config").expanduser()
        values["persona_dir"] = (
            env.get("VISUAL_ORCHESTRATOR_PERSONAS") or config_home / "visual-orchestrator" / "personas"
        )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown setting {unknown[0]!r}; settings are: {', '.join(sorted(known))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with these fields changed (None leaves a field as it is)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def sessions_dir(self) -> Path:
        return self.session_root or self.cache_dir / "sessions"

    @property
    def knowledge_dir(self) -> Path:
        """The folder of the knowledge bases, one subfolder each (``orchestrator/knowledge``)."""
        return self.knowledge_root or self.cache_dir / "knowledge"

    @property
    def inductor_dir(self) -> Path:
        """Inductor's on-disk cache of compiled code: the user's choice, else under the project's cache, so
        compiled code survives a reboot with the weights (a restart reuses it)."""
        return self.inductor_cache_dir or self.cache_dir / "inductor"

    @property
    def compiled_dir(self) -> Path:
        """Where warmup writes compiled code when no ``compiled_file`` is named: one file per GPU model and torch."""
        return self.cache_dir / "compiled"

    @property
    def openai_configured(self) -> bool:
        """Whether an OpenAI-compatible server was configured (the default brain is then ``openai``)."""
        return bool(self.openai_api_key or self.openai_base_url)


def split_list(text: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _milliseconds(text: str) -> float:
    """A non-negative number of milliseconds from the environment; anything else is 0."""
    try:
        value = float(text.strip())
    except ValueError:
        return 0.0
    return value if value >= 0 and value != float("inf") else 0.0


def _is_torch_default(path: str) -> bool:
    """Torch writes its own /tmp default into TORCHINDUCTOR_CACHE_DIR when its compiler is imported; that value
    is not the user's choice."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    return os.path.abspath(path) == os.path.abspath(default_cache_dir())
