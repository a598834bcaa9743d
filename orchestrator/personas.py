"""Personas (NextChat's "masks"): a preset chosen before or during a chat — its own system-prompt addition,
answer language, the tools it may use and example openers.

The shipped ones are ``personas/*.yaml`` (English and Chinese); the user's own are ``*.yaml`` files in
``Settings.persona_dir`` and win over a shipped one of the same name. A file that cannot be read is skipped with
a warning that names it; the others still load. The API offers each persona as a ``model``; the UI as a
dropdown; the CLI as ``--persona``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).resolve().parent / "data" / "personas"
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MAX_FILE_BYTES = 64_000


@dataclass(frozen=True)
class Persona:
    name: str  # the id: the API's model name, the --persona value
    title: str  # what a person reads in the UI
    description: str
    system: str = ""  # added to the system prompt
    language: str | None = None  # "en"/"zh": the answer language when a turn's text cannot tell
    tools: tuple[str, ...] = ()  # the tools it may use; empty: every tool loaded
    openers: tuple[str, ...] = ()  # example first messages

    def allows(self, tool: str) -> bool:
        return not self.tools or tool in self.tools

    @classmethod
    def from_dict(cls, data: Any, source: str) -> Persona:
        if not isinstance(data, dict):
            raise ValueError(f"{source} is not a mapping of fields")
        name = str(data.get("name") or "")
        if not NAME.match(name):
            raise ValueError(f"{source}: 'name' must be lower-case letters, digits, '-', '_' or '.'")
        language = data.get("language")
        if language not in (None, "en", "zh"):
            raise ValueError(f"{source}: 'language' must be en or zh")
        tools, openers = data.get("tools") or [], data.get("openers") or []
        if not isinstance(tools, list) or not isinstance(openers, list):
            raise ValueError(f"{source}: 'tools' and 'openers' must be lists")
        return cls(name, str(data.get("title") or name), str(data.get("description") or ""),
                   str(data.get("system") or "").strip(), language, tuple(map(str, tools)),
                   tuple(map(str, openers)))  # fmt: skip


def load_personas(user_dir: Path | None = None, shipped: Path = SHIPPED) -> dict[str, Persona]:
    """The shipped personas, then the user's (same name: the user's wins), by name, in file-name order."""
    found: dict[str, Persona] = {}
    for folder in (shipped, user_dir):
        if folder is None or not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.yaml")):
            try:
                if path.stat().st_size > MAX_FILE_BYTES:
                    raise ValueError(f"{path.name} is over {MAX_FILE_BYTES // 1000} kB")
                persona = Persona.from_dict(yaml.safe_load(path.read_text(encoding="utf-8")), path.name)
            except (OSError, ValueError, yaml.YAMLError) as exc:
                log.warning("persona %s skipped: %s", path, str(exc).splitlines()[0])
                continue
            found[persona.name] = persona
    return found


def choose(personas: dict[str, Persona], name: str | None) -> Persona | None:
    """The persona called ``name`` (None or "" for none); an unknown name is a SpecError naming the known ones."""
    if not name:
        return None
    if name not in personas:
        known = ", ".join(personas) or "none"
        raise SpecError(f"There is no persona '{name}'; the personas are: {known}.")
    return personas[name]
