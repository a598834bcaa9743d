"""The turn loop with brains written in the test: the time limit, a failing brain, progress from a worker thread."""

from __future__ import annotations

import time

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from PIL import Image

from orchestrator import Orchestrator
from orchestrator.events import ToolFinished, ToolStarted


class ScriptedBrain:
    """Answers each step from a list of functions of (messages, turn); sleeps ``delay`` per step."""

    def __init__(self, *steps, delay: float = 0.0):
        self.steps, self.delay, self.seen = list(steps), delay, []

    def respond(self, messages, tools, turn, timeout):
        self.seen.append((messages, turn, timeout))
        time.sleep(self.delay)
        return self.steps.pop(0)(messages, turn)


def canny(messages, turn) -> AIMessage:
    return AIMessage(
        "",
        tool_calls=[{"name": "image2canny", "args": {"image": turn.images[-1]}, "id": f"c{len(messages)}"}],
    )


@pytest.fixture
def make(tmp_path):
    def make(brain, **options) -> tuple[Orchestrator, object]:
        orch = Orchestrator(
            "Image2Canny_cpu", weights="tiny", session_root=tmp_path, brain=brain, brain_options=options
        )
        session = orch.new_session()
        session.upload(Image.new("RGB", (64, 64), "white"))
        return orch, session

    return make


def test_the_time_limit_stops_a_turn_between_steps(make):
    brain = ScriptedBrain(canny, canny, canny, delay=0.6)
    _, session = make(brain, turn_seconds=1.0)
    result = session.chat("edges, again and again")
    first, skipped = result.tool_calls
    assert first.error is None and skipped.error == "Not run: the turn's time limit was reached."
    assert result.reply.startswith("I stopped because this turn took longer than 1 seconds.")
    assert first.images[0] in result.reply
    assert brain.seen[1][2] < 0.5  # the model call is given only the time that is left


def test_a_brain_that_raises_ends_the_turn_not_the_session(make):
    def broken(messages, turn):
        raise KeyError("boom")

    brain = ScriptedBrain(broken, lambda m, t: AIMessage("fine again"))
    _, session = make(brain)
    result = session.chat("hi")
    assert result.reply == "The brain failed unexpectedly (KeyError: 'boom'); see the log." and result.error
    assert session.chat("hi").reply == "fine again"


def test_tool_results_reach_the_brain_and_history_keeps_the_whole_turn(make):
    brain = ScriptedBrain(canny, lambda m, t: AIMessage(f"done: {m[-1].content}"))
    _, session = make(brain)
    events = list(session.stream("edges"))
    started, finished = [e for e in events if isinstance(e, (ToolStarted, ToolFinished))]
    assert started.call_id == finished.call_id and finished.call.images
    last = brain.seen[1][0][-1]
    assert isinstance(last, ToolMessage) and last.tool_call_id == started.call_id
    assert [m["type"] for m in session.history] == ["human", "ai", "tool", "ai"]
    assert session.history[-1]["data"]["content"] == events[-1].result.reply
