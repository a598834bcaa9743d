"""The overhead section: what the orchestrator itself costs per user turn, with a scripted brain and a no-op tool.

The brain answers instantly (one tool call, then a reply) and the tool's model does nothing, so the time
of ``session.chat`` is the orchestrator's own: messages, history, validation, the tool's worker thread,
events, the image store. CPU only; it needs LangChain (the agent loop's message types).

    python -m benchmarks.overhead
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

from .inputs import photo
from .measure import Table


class ScriptedBrain:
    """Calls ``image_captioning`` on the newest image, then answers; no model, no network."""

    def respond(self, messages: list[Any], tools: list[Any], turn: Any, timeout: float) -> Any:
        from langchain_core.messages import AIMessage, ToolMessage

        if isinstance(messages[-1], ToolMessage):
            return AIMessage("It shows a cat.")
        call = {"name": "image_captioning", "args": {"image": turn.images[-1]}, "id": f"call_{len(messages)}"}
        return AIMessage("", tool_calls=[call])


class NoopCaptioner:
    """Stands in for the BLIP family: ``load`` returns a model whose caption costs nothing."""

    @staticmethod
    def load(ctx: Any) -> NoopCaptioner:
        return NoopCaptioner()

    def caption(self, image: Any) -> str:
        return "a cat"

    def to(self, device: str) -> None:
        pass


def measure(sessions: int = 20, turns: int = 10, long_turns: int = 100) -> dict[str, float]:
    """Per-turn time over ``sessions`` fresh sessions of ``turns`` turns, and at the end of a long session."""
    from orchestrator import Orchestrator

    orch = Orchestrator("ImageCaptioning_cpu", weights="tiny", brain=ScriptedBrain(),
                        families={"blip": NoopCaptioner})  # fmt: skip
    short = [t for _ in range(sessions + 1) for t in _turns(orch, turns)][
        turns:
    ]  # the first session warms up
    long = _turns(orch, long_turns)[-10:]
    short_ms = sorted(t * 1000 for t in short)
    return {"median_ms": statistics.median(short_ms), "p90_ms": short_ms[int(0.9 * len(short_ms))],
            "turns": len(short_ms), "long_session_ms": statistics.median(long) * 1000, "long_turns": long_turns}  # fmt: skip


def _turns(orch: Any, turns: int) -> list[float]:
    session = orch.new_session(folder=tempfile.mkdtemp(prefix="vo-overhead-"))
    session.upload(photo(64))
    times = []
    for _ in range(turns):
        started = time.perf_counter()
        result = session.chat("what is in the picture?")
        times.append(time.perf_counter() - started)
        assert result.tool_calls and not result.tool_calls[0].error, result
    return times


def section(run: Any) -> None:
    """The runner's section: fewer, shorter sessions in the smoke run."""
    small = run.settings.tiny
    result = measure(sessions=2 if small else 20, turns=5 if small else 10, long_turns=10 if small else 100)
    run.value("overhead", result)
    run.table(table(result))


def table(result: dict[str, float]) -> Table:
    out = Table("Orchestrator overhead per turn (scripted brain, no-op tool, CPU)",
                ["turns 1–10: median ms", "p90 ms", "turns", "after {long_turns} turns: ms".format(**result), "goal"])  # fmt: skip
    out.add(result["median_ms"], result["p90_ms"], result["turns"], result["long_session_ms"], "≤ 5 ms")
    return out


if __name__ == "__main__":
    print(table(measure()).markdown())
