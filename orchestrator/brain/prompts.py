"""Prompt texts (files in ``prompts/``), the short user-facing messages, and per-turn language detection."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

import yaml

LANGUAGES = ("en", "zh")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")
_IMAGE_NAME = re.compile(r"image/[0-9a-f]{8}\.png")


def prompts_dir() -> Any:
    """The prompts folder, also inside an installed package (``orchestrator/data/prompts``)."""
    return resources.files("orchestrator") / "data" / "prompts"


@cache
def load_prompt(name: str) -> str:
    return (prompts_dir() / name).read_text(encoding="utf-8")


@cache
def load_yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load(load_prompt(name))


def render(template: str, **values: Any) -> str:
    """Fill ``{name}`` placeholders; other braces (JSON examples) are left alone."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", str(value))
    return template


def message(key: str, language: str = "en", **values: Any) -> str:
    """A short message from prompts/messages.yaml in the given language (English when missing)."""
    texts = load_yaml("messages.yaml")[key]
    return render(texts.get(language) or texts["en"], **values).strip()


def detect_language(text: str, default: str = "en") -> str:
    """The turn's language: "zh" when mostly Chinese, "en" when mostly Latin words, else ``default``.

    Image names and slash commands (``/tool key=value``) say nothing about the user's language.
    """
    text = _IMAGE_NAME.sub(" ", text or "")
    if text.lstrip().startswith("/"):
        text = " ".join(w.split("=", 1)[-1] for w in text.split()[1:])
    cjk, latin = len(_CJK.findall(text)), len(_LATIN_WORD.findall(text))
    if not cjk and not latin:
        return default if default in LANGUAGES else "en"
    return "zh" if cjk >= latin else "en"


def system_prompt(language: str, images: list[str] | tuple[str, ...], persona: str = "") -> str:
    """The system prompt for one turn: the rules, the session's images, the answer language, and the persona's
    own instructions (``persona``) if one was chosen."""
    language = language if language in LANGUAGES else "en"
    shown = list(images)[-20:]
    none = message("no_images", language)
    text = render(
        load_prompt(f"system_{language}.md"),
        images=", ".join(shown) if shown else none,
        newest=shown[-1] if shown else none,
    ).strip()
    return f"{text}\n\n{persona.strip()}" if persona.strip() else text


def upload_announcement(language: str, name: str, caption: str | None) -> str:
    key = "upload_captioned" if caption else "upload"
    return message(key, language, name=name, caption=(caption or "").strip())
