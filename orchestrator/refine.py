"""Look at a generated picture, and try again when something asked for is missing (``--refine N``).

After a generating tool made an image, the image is read back: a caption (``image_captioning``) and, when the
VQA tool is loaded, a yes/no question for every object the prompt names and a colour question for every colour
it gives them. When something is missing the prompts are rewritten — by the LLM brain if there is one
(prompts/refine.md), by rules otherwise (the missing things first, the wrong colours in the negative prompt) —
and the tool runs again with a new seed, up to N more rounds; the best image (most checks passed, the earliest
on a tie) is the result the brain reads. Every check is a visible step (``check_image``) and every image's
lineage records its round, prompt, seed and verdict.

Also here: ``keep_request``, which puts back into a diffusion prompt the words of the user's request that a
small model's "expanded" prompt dropped.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .brain.prompts import load_prompt, render
from .calls import execute, stream
from .events import Event, ToolCall, ToolFinished, ToolStarted

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)
Steps = Generator[Event, None, Any]

PROMPT_ARG = {  # generating tool -> its prompt argument
    "text2image": "prompt", "inpainting": "prompt", "canny2image": "prompt", "line2image": "prompt",
    "hed2image": "prompt", "scribble2image": "prompt", "pose2image": "prompt", "seg2image": "prompt",
    "depth2image": "prompt", "normal2image": "prompt", "instruct_pix2pix": "instruction",
}  # fmt: skip
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey", "gray",
           "golden", "silver")  # fmt: skip
STOP_WORDS = set(
    """a an the of on in at with and or by to from under over near next beside behind front some two
three four five many its it is are very make it turn into style photo picture image painting drawing draw
render detailed realistic high quality beautiful""".split()
)
SPLIT = re.compile(r",|;|\band\b|\bwith\b|\bon\b|\bin\b|\bunder\b|\bnext to\b|\bbehind\b|\bnear\b|\bby\b")
MAX_CHECKS = 6


@dataclass(frozen=True)
class Check:
    thing: str  # "car"
    colour: str | None = None  # "red"

    @property
    def phrase(self) -> str:
        return f"{self.colour} {self.thing}" if self.colour else self.thing


@dataclass
class Verdict:
    image: str
    caption: str
    found: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # colours seen instead of those asked ("blue car")

    @property
    def score(self) -> float:
        total = len(self.found) + len(self.missing)
        return len(self.found) / total if total else 1.0

    def as_dict(self, round_: int, prompt: str) -> dict[str, Any]:
        return {"round": round_, "prompt": prompt, "score": round(self.score, 3), "found": self.found,
                "missing": self.missing, "wrong": self.wrong, "caption": self.caption}  # fmt: skip


class Reader(Protocol):
    """What reads a picture back (tests script it; ``ToolReader`` uses the session's BLIP tools)."""

    def caption(self, session: Session, image: str) -> str: ...
    def answer(self, session: Session, image: str, question: str) -> str | None: ...


class ToolReader:
    """The session's own ``image_captioning`` and ``visual_question_answering`` tools."""

    def caption(self, session: Session, image: str) -> str:
        record = execute(session, "image_captioning", {"image": image})
        return "" if record.error else record.output

    def answer(self, session: Session, image: str, question: str) -> str | None:
        if "visual_question_answering" not in session.orchestrator.tools:
            return None
        record = execute(session, "visual_question_answering", {"image": image, "question": question})
        return None if record.error else record.output


def checks_for(prompt: str) -> list[Check]:
    """The things a prompt asks for, each with its colour if it gives one (rule-based, English prompts)."""
    checks: list[Check] = []
    for phrase in SPLIT.split(prompt.lower()):
        words = [w for w in re.findall(r"[a-z]+", phrase) if w not in STOP_WORDS]
        nouns = [w for w in words if w not in COLOURS]
        if not nouns:
            continue
        colour = next((w for w in words if w in COLOURS), None)
        check = Check(nouns[-1], colour)
        if check not in checks:
            checks.append(check)
    return checks[:MAX_CHECKS]


def judge(session: Session, reader: Reader, image: str, checks: list[Check]) -> Verdict:
    caption = reader.caption(session, image)
    verdict = Verdict(image, caption)
    said = caption.lower()
    for check in checks:
        answer = reader.answer(session, image, f"Is there a {check.thing} in the picture?")
        present = _yes(answer) if answer is not None else re.search(rf"\b{check.thing}s?\b", said) is not None
        if present and check.colour:
            colour = reader.answer(session, image, f"What color is the {check.thing}?")
            seen = (colour or said).lower()
            if check.colour not in seen:
                present = False
                other = next((c for c in COLOURS if c in seen.split()), None)
                if other:
                    verdict.wrong.append(f"{other} {check.thing}")
        (verdict.found if present else verdict.missing).append(check.phrase)
    return verdict


def rewrite_by_rules(prompt: str, verdict: Verdict) -> tuple[str, str]:
    """The missing things first and named plainly; the wrong colours seen go to the negative prompt."""
    missing = ", ".join(f"a clearly visible {m}" for m in verdict.missing)
    return f"{missing}, {prompt}" if missing else prompt, ", ".join(verdict.wrong)


def rewrite_by_brain(session: Session, prompt: str, verdict: Verdict) -> tuple[str, str] | None:
    """The LLM's rewrite of the prompts (prompts/refine.md), or None (no LLM, or no usable answer)."""
    holder = session.orchestrator.brain
    if holder.config.kind == "rules":
        return None
    from langchain_core.messages import HumanMessage, SystemMessage

    from .brain import TurnInfo

    ask = render(load_prompt("refine.md"), prompt=prompt, missing=", ".join(verdict.missing) or "-",
                 wrong=", ".join(verdict.wrong) or "-", caption=verdict.caption or "-")  # fmt: skip
    try:
        reply = holder.get().respond(
            [SystemMessage(ask), HumanMessage(prompt)], [], TurnInfo(prompt, "en"), 60
        )
        data = json.loads(re.search(r"\{.*\}", str(reply.content), re.S).group(0))  # type: ignore[union-attr]
        new, negative = str(data["prompt"]).strip(), str(data.get("negative_prompt") or "").strip()
    except Exception as exc:  # an LLM that did not answer in JSON: the rules rewrite instead
        log.info("refine: the brain's rewrite was not usable (%s); rewriting by rules", exc)
        return None
    return (keep_request(new, prompt), negative) if new else None


def refine(session: Session, name: str, args: dict[str, Any], first: ToolCall, rounds: int,
           reader: Reader | None = None) -> Steps:  # fmt: skip
    """Check ``first`` (a generating call that made an image) and retry up to ``rounds`` times; yields every
    step, returns the ToolCall the brain reads (the best image named) and the records of every step."""
    reader = reader or session.refine_reader or ToolReader()
    arg = PROMPT_ARG[name]
    prompt = str(args.get(arg) or "")
    checks = checks_for(prompt)
    records: list[ToolCall] = []
    best: Verdict | None = None
    call, current = first, prompt
    for round_ in range(rounds + 1):
        image = call.images[-1]
        verdict = judge(session, reader, image, checks)
        session.images.note_verdict(image, verdict.as_dict(round_ + 1, current))
        records.append((yield from _check_step(round_ + 1, verdict, checks)))
        if best is None or verdict.score > best.score:
            best = verdict
        if not verdict.missing or round_ == rounds:
            break
        current, negative = rewrite_by_brain(session, current, verdict) or rewrite_by_rules(prompt, verdict)
        again = {k: v for k, v in args.items() if k != "seed"} | {arg: current}
        if negative and "negative_prompt" in {p.name for p in session.orchestrator.tools[name].params}:
            again["negative_prompt"] = negative
        call = yield from stream(session, _call_id(), name, again)
        records.append(call)
        if call.error or not call.images:
            break
    assert best is not None
    summary = (f"Checked {len(checks)} things asked for over {sum(r.tool == 'check_image' for r in records)} "
               f"round(s); the best image is {best.image}"
               + (f" (still missing: {', '.join(best.missing)})." if best.missing else " (everything asked for was found)."))  # fmt: skip
    result = ToolCall(first.tool, first.args, f"{first.output}\n{summary}",
                      images=[i for r in [first, *records] for i in r.images], seconds=first.seconds)  # fmt: skip
    return result, records


def _check_step(round_: int, verdict: Verdict, checks: list[Check]) -> Steps:
    call_id = _call_id()
    args = {"image": verdict.image, "round": round_, "asked": [c.phrase for c in checks]}
    yield ToolStarted(call_id, "check_image", args)
    found = ", ".join(verdict.found) or "-"
    missing = ", ".join(verdict.missing) or "-"
    output = (
        f"caption: {verdict.caption or '-'}; found: {found}; missing: {missing}; score {verdict.score:.2f}"
    )
    record = ToolCall("check_image", args, output)
    yield ToolFinished(call_id, record)
    return record


def keep_request(prompt: str, request: str) -> str:
    """``prompt`` with what an English ``request`` asked for and the prompt lost put back in front: its colours
    and its quoted phrases. An expanded prompt may add subject detail, style and light, never lose those."""
    if not prompt:
        return request
    have = prompt.lower()
    colours = [
        c for c in COLOURS if re.search(rf"\b{c}\b", request.lower()) and not re.search(rf"\b{c}\b", have)
    ]
    quoted = [q for q in re.findall(r"[\"“]([^\"”]{1,80})[\"”]", request) if q.lower() not in have]
    lost = [*quoted, *colours]
    return f"{', '.join(lost)}, {prompt}" if lost else prompt


def _call_id() -> str:
    from .brain.parsers import new_call_id

    return new_call_id()


def _yes(answer: str) -> bool:
    return answer.strip().lower().startswith(("yes", "yeah", "true", "是", "有"))
