"""Issue 22: the check-and-retry loop (``--refine N``) and prompts that keep what was asked for.

Captions and answers are scripted (tiny BLIP weights describe noise); the tools, the loop, the brains and the
lineage are the real ones.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from scripted_llm import ScriptedLLM, reply, tool_call

from orchestrator import Orchestrator
from orchestrator.cli import main
from orchestrator.refine import COLOURS, Check, checks_for, keep_request

PROMPT = "a red car and a blue bicycle on a beach"


class ScriptedReader:
    """Answers per round: ``rounds[i]`` maps a question word to the answer for the i-th image checked."""

    def __init__(self, *rounds: dict[str, str]):
        self.rounds = list(rounds)
        self.seen: list[str] = []

    def _round(self, image: str) -> dict[str, str]:
        if image not in self.seen:
            self.seen.append(image)
        return self.rounds[min(self.seen.index(image), len(self.rounds) - 1)]

    def caption(self, session, image):
        return self._round(image).get("caption", "")

    def answer(self, session, image, question):
        answers = self._round(image)
        return next((a for key, a in answers.items() if key in question), "no")


def make(tmp_path, **options):
    return Orchestrator(
        "Text2Image_cpu,ImageCaptioning_cpu", weights="tiny", session_root=tmp_path, **options
    )


def test_the_things_a_prompt_asks_for():
    assert checks_for(PROMPT) == [Check("car", "red"), Check("bicycle", "blue"), Check("beach")]
    assert checks_for("a cat") == [Check("cat")]


def test_the_loop_retries_on_a_missing_object_and_stops_when_the_check_passes(tmp_path):
    session = make(tmp_path, brain="rules").new_session()
    session.refine_rounds = 3
    session.refine_reader = ScriptedReader(
        {"caption": "a blue car on a beach", "a car": "yes", "the car": "blue", "a bicycle": "no", "a beach": "yes"},
        {"caption": "a red car and a blue bicycle on a beach", "a car": "yes", "the car": "red",
         "a bicycle": "yes", "the bicycle": "blue", "a beach": "yes"},
    )  # fmt: skip
    result = session.chat(f'/text2image prompt="{PROMPT}" seed=1')
    tools = [c.tool for c in result.tool_calls]
    assert tools == [
        "text2image",
        "check_image",
        "text2image",
        "check_image",
    ]  # stopped: all found in round 2
    first_check, retry, second_check = result.tool_calls[1:]
    assert "missing: red car, blue bicycle" in first_check.output
    assert retry.args["prompt"].startswith(
        "a clearly visible red car, a clearly visible blue bicycle, a red car"
    )
    assert retry.args["negative_prompt"] == "blue car" and retry.args["seed"] != 1  # a new seed
    assert "missing: -" in second_check.output and "score 1.00" in second_check.output
    lineage = json.loads((session.folder / "lineage.json").read_text())
    verdicts = [r["verdict"] for r in lineage if r["tool"] == "text2image"]
    assert [(v["round"], v["score"]) for v in verdicts] == [(1, 0.333), (2, 1.0)]
    assert verdicts[0]["prompt"] == PROMPT and verdicts[1]["prompt"] == retry.args["prompt"]
    assert retry.images[0] in result.reply  # the rules brain names the best image


def test_the_loop_stops_after_n_rounds_and_keeps_the_best(tmp_path):
    session = make(tmp_path, brain="rules").new_session()
    session.refine_rounds = 2
    session.refine_reader = ScriptedReader(
        {"caption": "a car", "a car": "yes", "the car": "blue"}, {"caption": "noise"}
    )
    result = session.chat(f'/text2image prompt="{PROMPT}"')
    assert [c.tool for c in result.tool_calls].count("text2image") == 3  # the first and two more, then stop
    assert [c.tool for c in result.tool_calls].count("check_image") == 3
    first = result.tool_calls[0].images[0]
    assert f"the best image is {first}" in session.history[-2]["data"]["content"]  # what the brain read


def test_refine_0_adds_nothing(tmp_path):
    session = make(tmp_path, brain="rules").new_session()
    assert session.refine_rounds == 0
    result = session.chat('/text2image prompt="a cat"')
    assert [c.tool for c in result.tool_calls] == ["text2image"]


def test_the_llm_brain_rewrites_the_prompts(tmp_path):
    with ScriptedLLM() as llm:
        orch = make(
            tmp_path, brain="openai", brain_options={"base_url": llm.url, "api_key": "k", "max_retries": 0}
        )
        session = orch.new_session()
        session.refine_rounds = 1
        session.refine_reader = ScriptedReader({"caption": "a beach", "a beach": "yes"}, {"caption": "all", "a car": "yes",
                                               "the car": "red", "a bicycle": "yes", "the bicycle": "blue",
                                               "a beach": "yes"})  # fmt: skip
        rewritten = {"prompt": "a shiny car and a bicycle on a sunny beach", "negative_prompt": "empty beach"}
        llm.add(tool_call("text2image", prompt=PROMPT), reply(json.dumps(rewritten)), reply("Done."))
        result = session.chat("draw a red car and a blue bicycle on a beach")
        ask = llm.requests[1]["messages"][0]["content"]
        assert "Missing: red car, blue bicycle" in ask
    retry = result.tool_calls[2]
    assert retry.args["prompt"] == "red, blue, a shiny car and a bicycle on a sunny beach"  # the colours kept
    assert retry.args["negative_prompt"] == "empty beach" and result.reply == "Done."


def test_run_json_shows_each_round_with_the_real_captioner(tmp_path, capsys):
    code = main(["run", "--load", "Text2Image_cpu,ImageCaptioning_cpu", "--weights", "tiny", "--brain", "rules",
                 "--refine", "1", "--json", '/text2image prompt="a lighthouse"'])  # fmt: skip
    turn = json.loads(capsys.readouterr().out)["turns"][0]
    tools = [c["tool"] for c in turn["tool_calls"]]
    assert code == 0 and tools[:2] == ["text2image", "check_image"] and len(tools) in (2, 4)
    assert "caption:" in turn["tool_calls"][1]["output"]


@given(st.lists(st.sampled_from(COLOURS[:10]), min_size=1, max_size=3, unique=True),
       st.sampled_from(["a car", "a cosy house in the hills, watercolour", ""]))  # fmt: skip
def test_an_expanded_prompt_never_loses_an_asked_colour_or_quoted_words(colours, expansion):
    request = f'draw a {" and a ".join(c + " kite" for c in colours)} saying "HELLO"'
    kept = keep_request(expansion, request)
    assert all(c in kept for c in colours) and "HELLO" in kept
