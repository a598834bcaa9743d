"""The models panel: one card per ``--load`` entry with its device, state and VRAM against its budget."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

from foundation_models.webclient.search import label_of

from ..manager import ModelStatus
from .i18n import Strings

if TYPE_CHECKING:
    from ..engine import Orchestrator

STATE_KEYS = {"not loaded": "state_not_loaded", "loading": "state_loading", "resident": "state_resident",
              "offloaded": "state_offloaded"}  # fmt: skip
COMPILE_KEYS = {"compiled": "compile_compiled", "compiling": "compile_compiling", "eager": "compile_eager"}

CSS = """
.vo-models { display: flex; flex-direction: column; gap: 8px; font-size: 0.9em; }
.vo-card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 10px;
           background: var(--background-fill-secondary); }
.vo-head { display: flex; justify-content: space-between; align-items: center; gap: 6px; }
.vo-name { font-weight: 600; }
.vo-badge { border-radius: 999px; padding: 1px 8px; font-size: 0.8em; white-space: nowrap;
            background: var(--neutral-200); color: var(--neutral-800); }
.vo-state-resident .vo-badge { background: #16a34a; color: white; }
.vo-state-loading .vo-badge { background: #f59e0b; color: black; }
.vo-state-offloaded .vo-badge { background: #64748b; color: white; }
.vo-sub { color: var(--body-text-color-subdued); margin-top: 2px; }
.vo-compile-compiled { color: #16a34a; }
.vo-compile-compiling { color: #b45309; }
.vo-bar { height: 6px; border-radius: 3px; background: var(--neutral-200); margin-top: 5px; overflow: hidden; }
.vo-bar > span { display: block; height: 100%; background: var(--color-accent); }
.vo-note { border-left: 3px solid #f59e0b; padding: 4px 8px; background: var(--background-fill-secondary); }
.vo-devices { color: var(--body-text-color-subdued); }
"""


def notes(orchestrator: Orchestrator, strings: Strings) -> list[str]:
    """What a person should know about how this app runs: tiny weights, no LLM, the web search backend."""
    out = []
    if orchestrator.weights == "tiny":
        out.append(strings["note_tiny"])
    if brain_name(orchestrator) == "rules":
        out.append(strings["note_rules"])
    if "web_search" in orchestrator.tools:
        settings = orchestrator.settings
        backend = label_of(settings.web_search, settings.web_search_url)
        out.append(strings.format("note_web_search", backend=backend) if backend else strings["note_web_off"])
    return out


def brain_name(orchestrator: Orchestrator) -> str:
    """'rules', 'openai', 'hf:…' or 'custom' (what the orchestrator was built with)."""
    return str(getattr(orchestrator.brain, "label", ""))


def models_html(orchestrator: Orchestrator, strings: Strings) -> str:
    statuses = orchestrator.manager.status()
    parts = [f'<div class="vo-note">{escape(note)}</div>' for note in notes(orchestrator, strings)]
    parts.append(_devices(orchestrator, statuses, strings))
    weights = weights_lines(orchestrator, [s.card for s in statuses if s.state == "not loaded"], strings)
    parts += [_card(status, strings, weights.get(status.card, "")) for status in statuses]
    return f'<div class="vo-models">{"".join(parts)}</div>'


def weights_lines(orchestrator: Orchestrator, cards: list[str], strings: Strings) -> dict[str, str]:
    """For cards not loaded yet, with hub weights: are their checkpoints on disk (``weights`` command's answer)."""
    if orchestrator.weights != "hub" or not cards:
        return {}
    from ..download import human, readiness

    out = {}
    for status in readiness(orchestrator.cards, cards, orchestrator.resolver.model_dir):
        if not status.checkpoints:  # Canny and the composites read no weights of their own
            continue
        if status.ready:
            out[status.card] = strings.format("weights_ready", size=human(status.size_bytes))
        else:
            out[status.card] = strings.format("weights_missing", card=status.card)
    return out


def _card(status: ModelStatus, strings: Strings, weights: str = "") -> str:
    state = strings[STATE_KEYS.get(status.state, "state_not_loaded")]
    used = f"{status.vram_mb:,}"
    if status.budget_mb:
        vram = strings.format("vram_of_budget", used=used, budget=f"{status.budget_mb:,}")
        width = min(100, round(100 * status.vram_mb / status.budget_mb))
        bar = f'<div class="vo-bar"><span style="width:{width}%"></span></div>'
    else:
        vram, bar = strings.format("vram_no_budget", used=used), ""
    css_state = status.state.replace(" ", "-")
    return (
        f'<div class="vo-card vo-state-{css_state}" data-card="{escape(status.card)}" data-state="{escape(status.state)}">'
        f'<div class="vo-head"><span class="vo-name">{escape(status.card)}</span>'
        f'<span class="vo-badge">{escape(state)}</span></div>'
        f'<div class="vo-sub">{escape(status.device)} · {escape(vram)}</div>'
        + (f'<div class="vo-sub vo-weights">{escape(weights)}</div>' if weights else "")
        + _compile_line(status, strings)
        + (
            f'<div class="vo-sub vo-fallback">⚠ {escape(strings.format("fast_fallback", reason=status.fast_fallback))}</div>'
            if status.fast_fallback
            else ""
        )
        + f"{bar}</div>"
    )


def _compile_line(status: ModelStatus, strings: Strings) -> str:
    """Compiled, compiling in the background, or eager, for a loaded model whose family compiles."""
    key = COMPILE_KEYS.get(status.compile_state or "")
    if key is None:
        return ""
    state = escape(status.compile_state or "")
    return f'<div class="vo-sub vo-compile vo-compile-{state}" data-compile="{state}">{escape(strings[key])}</div>'


def _devices(orchestrator: Orchestrator, statuses: Sequence[ModelStatus], strings: Strings) -> str:
    lines = []
    for device in sorted({s.device for s in statuses}):
        used = f"{orchestrator.manager.resident_mb(device):,}"
        budget = orchestrator.plan.budget_of(device)
        if budget:
            lines.append(strings.format("device_line", device=device, used=used, budget=f"{budget:,} MB"))
        else:
            lines.append(strings.format("device_line_no_budget", device=device, used=used))
    return f'<div class="vo-devices">{"<br>".join(escape(line) for line in lines)}</div>'
