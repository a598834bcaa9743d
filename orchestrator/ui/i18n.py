"""The app's text in English and 中文, read from ``prompts/ui_strings.yaml``."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

LANGUAGES = ("en", "zh")


@lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    path = resources.files("orchestrator") / "data" / "prompts" / "ui_strings.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


class Strings:
    """``Strings("zh")["clear"]`` or ``Strings("en").format("busy")``; unknown languages fall back to English."""

    def __init__(self, language: str = "en"):
        self.language = language if language in LANGUAGES else "en"
        raw = _load()
        self._text: dict[str, str] = raw[self.language]
        self.examples: dict[str, str] = raw[f"{self.language}_examples"]

    def __getitem__(self, key: str) -> str:
        return self._text[key]

    def format(self, key: str, **values: Any) -> str:
        return self._text[key].format(**values)


def language_choices() -> list[tuple[str, str]]:
    """(label, value) pairs for the language switch: [("English", "en"), ("中文", "zh")]."""
    return [(Strings(code)["language_name"], code) for code in LANGUAGES]
