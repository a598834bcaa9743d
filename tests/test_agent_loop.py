"""The turn loop with brains written in the test: the time limit, a failing brain, progress from a worker thread,
one turn at a time on a session."""

from __future__ import annotations

import threading
import time

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from PIL import Image

from orchestrator import Orchestrator
from orchestrator.events import ImageStored, ToolFinished, ToolStarted


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


def test_each_stored_upload_is_an_event_with_its_name_and_a_refused_one_is_none(make, tmp_path):
    brain = ScriptedBrain(lambda m, t: AIMessage(f"I see {', '.join(t.uploads)}"))
    _, session = make(brain)
    photo, broken = tmp_path / "photo.png", tmp_path / "broken.png"
    Image.new("RGB", (64, 64), "red").save(photo)
    broken.write_bytes(b"not an image")
    events = list(session.stream("look", images=[broken, photo, photo.read_bytes()]))
    stored = [e for e in events if isinstance(e, ImageStored)]
    result = events[-1].result
    assert [e.filename for e in stored] == ["photo.png", None]  # bytes have no file name
    assert [e.name for e in stored] == result.images
    assert all(name in session.images.names() for name in result.images)
    assert events.index(stored[-1]) < len(events) - 2  # before the reply and the end of the turn
    assert "'broken.png' is not an image" in result.reply and result.reply.endswith(
        f"I see {', '.join(result.images)}"
    )


def test_two_threads_on_one_session_take_turns(make):
    first_asked, second_asked = threading.Event(), threading.Event()

    class Brain:
        def respond(self, messages, tools, turn, timeout):
            if turn.text == "second":
                second_asked.set()
                return AIMessage("answer second")
            if isinstance(messages[-1], ToolMessage):
                return AIMessage("answer first")
            first_asked.set()
            second_asked.wait(0.5)  # without the turn lock the second turn runs meanwhile
            return canny(messages, turn)

    _, session = make(Brain())
    results = {}
    first = threading.Thread(target=lambda: results.update(first=session.chat("first")))
    second = threading.Thread(target=lambda: results.update(second=session.chat("second")))
    first.start()
    assert first_asked.wait(5)
    second.start()
    first.join(5)
    second.join(5)
    assert results["first"].reply == "answer first" and results["first"].tool_calls[0].error is None
    assert results["second"].reply == "answer second"
    said = [(m["type"], m["data"]["content"]) for m in session.history if m["type"] in ("human", "ai")]
    assert said == [("human", "first"), ("ai", ""), ("ai", "answer first"), ("human", "second"),
                    ("ai", "answer second")]  # fmt: skip


def test_a_stream_closed_or_dropped_mid_turn_lets_the_next_turn_run(make):
    brain = ScriptedBrain(canny, canny, lambda m, t: AIMessage("next turn"))
    _, session = make(brain)
    stream = session.stream("edges")
    assert isinstance(next(stream), ToolStarted)
    stream.close()
    assert isinstance(next(session.stream("edges")), ToolStarted)  # dropped at once, never finished
    done = []
    worker = threading.Thread(target=lambda: done.append(session.chat("and now?")), daemon=True)
    worker.start()
    worker.join(5)
    assert done and done[0].reply == "next turn", "the next turn waited for a turn that was given up"
