"""One user turn as a stream of events: uploads, then brain steps and tool calls until an answer.

A tool error, a bad argument or an unknown tool is an observation the brain reads; the turn goes on
until the brain answers, ``max_steps`` model calls were made, or ``turn_seconds`` passed. A brain that
fails (server down, model missing) ends the turn with a reply that says what to do.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Generator, Sequence
from contextlib import closing
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from .brain import Brain, BrainError, LazyBrain, TurnInfo
from .brain.history import chat_dict, dump, load, trim
from .brain.openai_chat import tool_specs
from .brain.parsers import new_call_id
from .brain.prompts import detect_language, message, system_prompt, upload_announcement
from .calls import refuse, stream
from .errors import ImageError
from .events import Event, ImageStored, Notice, ReplyDelta, ToolCall, TurnFinished, TurnResult
from .refine import PROMPT_ARG, keep_request, refine

if TYPE_CHECKING:
    from .session import Session
    from .tools import Tool

log = logging.getLogger(__name__)
Steps = Generator[Event, None, Any]


def run_turn(session: Session, text: str, images: Sequence[Any] = (), language: str | None = None) -> Steps:
    """``language`` decides only when the text has no words to tell (see ``detect_language``)."""
    holder: LazyBrain = session.orchestrator.brain
    deadline = time.monotonic() + holder.config.turn_seconds
    language = session.language = detect_language(text, language or session.language)
    result = TurnResult(user=text)
    notice = holder.config.notice(language)  # how an auto brain was chosen, once per session
    if notice and "brain_chosen" not in session.notices:
        session.notices.add("brain_chosen")
        yield Notice(notice)
    lines, refused = yield from _uploads(session, holder, images, language, result)
    human = HumanMessage("\n".join([*lines, text]).strip())
    turn = TurnInfo(text, language, uploads=tuple(result.images))
    system = _system(session, language)  # as the first step sees it, for the session's record
    new: list[BaseMessage] = [human]
    shown: list[str] = []  # the reply text streamed since the last tool step
    reply = (yield from _steps(session, holder, new, turn, result, deadline, shown)).strip()
    reply = cite_sources(reply or message("empty_reply", language), result, language)
    if len(new) > 1:  # a turn the brain never answered is not history
        if not isinstance(new[-1], AIMessage) or new[-1].tool_calls:
            new.append(AIMessage(reply))  # a stopped turn still leaves a valid history
        session.history.extend(dump(new))
    result.reply = "\n\n".join([*refused, reply]).strip()
    result.error = result.error or (refused[0] if refused else None)
    streamed = "".join(shown)
    if result.reply.startswith(streamed):  # usually all of it was streamed, or all but what the guard held
        if result.reply[len(streamed) :]:
            yield ReplyDelta(result.reply[len(streamed) :])
    else:
        yield ReplyDelta(result.reply, replace=True)
    session.record_turn(turn_record(result, [system, *new], _tools(session), language))
    yield TurnFinished(result)


def turn_record(
    result: TurnResult, messages: list[BaseMessage], tools: list[Tool], language: str
) -> dict[str, Any]:
    """One finished turn as the session's record keeps it: the chat the brain saw and wrote (OpenAI chat
    messages), the tools it was offered (function specs) and every call's outcome (``ToolCall.as_dict``)."""
    return {"user": result.user, "reply": result.reply, "error": result.error, "language": language,
            "messages": [chat_dict(m) for m in messages], "tools": tool_specs(tools),
            "tool_calls": [call.as_dict() for call in result.tool_calls], "cleared": False}  # fmt: skip


def _tools(session: Session) -> list[Tool]:
    """The tools this session's brain is offered (its persona's, or all)."""
    persona = session.persona
    return [t for t in session.orchestrator.tools.values() if persona is None or persona.allows(t.name)]


def _system(session: Session, language: str) -> SystemMessage:
    persona = session.persona
    return SystemMessage(
        system_prompt(language, tuple(session.images.names()), persona.system if persona else "")
    )


def cite_sources(reply: str, result: TurnResult, language: str) -> str:
    """The reply, with the sources its tools read listed under it when it names none of them (a web page's URL,
    a document's file and page): the user can always tell where an answer came from."""
    sources = list(dict.fromkeys(s for call in result.tool_calls if not call.error for s in call.sources))
    if not sources or result.error or any(source in reply for source in sources):
        return reply
    listed = "\n".join(f"[{i}] {source}" for i, source in enumerate(sources, 1))
    return f"{reply}\n\n{message('sources', language)}\n{listed}"


def _steps(session: Session, holder: LazyBrain, new: list[BaseMessage], turn: TurnInfo, result: TurnResult,
           deadline: float, shown: list[str]) -> Steps:  # fmt: skip
    """Brain steps until an answer; returns the reply. The reply's text is streamed as it comes (``shown``)."""
    config, tools = holder.config, _tools(session)
    history = trim(load(session.history), config.history_tokens)
    try:
        if not holder.loaded and config.kind == "hf":
            yield Notice(message("loading_brain", turn.language, model=config.model))
        brain = holder.get()
        for _ in range(config.max_steps):
            if time.monotonic() >= deadline:
                return _stopped("time_limit", turn.language, result, seconds=round(config.turn_seconds))
            names = tuple(session.images.names())
            ai = yield from _ask(brain, [_system(session, turn.language), *history, *new], tools,
                                 replace(turn, images=names), deadline, shown)  # fmt: skip
            calls = [*ai.tool_calls, *ai.invalid_tool_calls]
            for call in calls:
                call["id"] = call.get("id") or new_call_id()
            new.append(ai)
            if not calls:
                return str(ai.content)
            shown.clear()  # what was shown stays above the tool steps; the reply is what comes after them
            for call in calls:
                record = yield from _call(session, call, result, deadline, config.max_tool_calls)
                status = "error" if record.error else "success"
                new.append(
                    ToolMessage(record.output, tool_call_id=call["id"], name=call["name"], status=status)
                )
        return _stopped("step_limit", turn.language, result, steps=config.max_steps)
    except BrainError as exc:
        result.error = exc.text(turn.language)
    except Exception as exc:  # a bug in a brain: logged in full; the session goes on
        log.exception("the brain failed")
        result.error = message(
            "brain_failed", turn.language, reason=f"{type(exc).__name__}: {str(exc)[:160]}"
        )
    return result.error


def _ask(brain: Brain, messages: list[BaseMessage], tools: list[Tool], turn: TurnInfo, deadline: float,
         shown: list[str]) -> Steps:  # fmt: skip
    """The brain's next message. A brain that streams (``stream``) has its text yielded piece by piece as
    ReplyDelta events; closing the turn closes the brain's stream (and so its request)."""
    stream = getattr(brain, "stream", None)
    if stream is None:
        return brain.respond(messages, tools, turn, deadline - time.monotonic())
    with closing(stream(messages, tools, turn, deadline - time.monotonic())) as pieces:
        while True:
            try:
                piece = next(pieces)
            except StopIteration as stop:
                return stop.value
            shown.append(piece)
            yield ReplyDelta(piece)


def _call(session: Session, call: dict[str, Any], result: TurnResult, deadline: float, limit: int) -> Steps:
    """Run one tool call from the brain; a call that cannot run is recorded with its reason."""
    name, args = call["name"], call["args"]
    if call.get("type") == "invalid_tool_call":
        tool = session.orchestrator.tools.get(name)
        example = json.dumps({p.name: "..." for p in tool.params if p.required} if tool else {})
        error = message("bad_arguments", tool=name, reason=call.get("error") or "?", example=example)
    elif (
        session.persona is not None
        and not session.persona.allows(name)
        and name in session.orchestrator.tools
    ):
        error = message("persona_tool", tool=name, persona=session.persona.title)
    elif time.monotonic() >= deadline:
        error = message("tool_skipped")
    elif len(result.tool_calls) >= limit:
        error = message("too_many_tool_calls", limit=limit)
    else:
        error = None
    if error:
        record = yield from refuse(session, call["id"], name, args, error)
        result.tool_calls.append(record)
        return record
    return (yield from run_tool(session, call["id"], name, args, result))


def run_tool(session: Session, call_id: str, name: str, args: Any, result: TurnResult) -> Steps:
    """One tool call of this turn, its progress streamed (``calls.stream``); its images count as the turn's.
    A generating call is checked and retried when the session refines (``refine.py``, ``--refine N``)."""
    if name in PROMPT_ARG and isinstance(args, dict) and isinstance(args.get(PROMPT_ARG[name]), str):
        args = {**args, PROMPT_ARG[name]: keep_request(args[PROMPT_ARG[name]], result.user)}
    record: ToolCall = yield from stream(session, call_id, name, args)
    result.tool_calls.append(record)
    result.images.extend(record.images)
    if session.refine_rounds > 0 and name in PROMPT_ARG and not record.error and record.images:
        read, steps = yield from refine(session, name, record.args, record, session.refine_rounds)
        result.tool_calls.extend(steps)
        result.images.extend(i for i in read.images if i not in result.images)
        return read
    return record


def _uploads(
    session: Session, holder: LazyBrain, images: Sequence[Any], language: str, result: TurnResult
) -> Steps:
    """Store the uploads; returns (lines announcing them to the brain, messages about refused ones)."""
    lines, refused = [], []
    for image in images:
        try:
            name = session.upload(image)
        except ImageError as exc:
            refused.append(message("upload_failed", language, reason=exc))
            lines.append(refused[-1])
            continue
        result.images.append(name)
        yield ImageStored(name, session.images.lineage(name).source)
        caption = None
        captioner = session.orchestrator.tools.get("image_captioning")
        image_arg = next((p.name for p in captioner.params if p.kind == "image"), None) if captioner else None
        if image_arg and holder.config.kind != "rules":  # the rules brain does not read captions
            record = yield from run_tool(session, new_call_id(), captioner.name, {image_arg: name}, result)
            caption = None if record.error else record.output
        lines.append(upload_announcement(language, name, caption))
    return lines, refused


def _stopped(key: str, language: str, result: TurnResult, **values: Any) -> str:
    names = ", ".join(result.images[-5:])
    made = message("images_made", language, names=names) if names else ""
    return message(key, language, images=" " + made if made else "", **values)
