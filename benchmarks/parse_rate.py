"""Issue 19: how many recorded model outputs the tool-call parsers read as expected, per format.

Each record in ``tests/fixtures/tool_calls/*.json`` is a raw output a model wrote (with the issue thread it
was found in) and what it must become: the calls (``expected``), the reply text (``answer``) or an invalid
call the model is told about (``invalid``). No model, no network.

    python -m benchmarks.parse_rate
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage

from orchestrator.brain.parsers import parse_tool_calls, recognised_by

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tool_calls"


def load_records() -> list[dict[str, Any]]:
    """Every record, with ``format`` (its file's name) and ``id`` (format and index) added."""
    records = []
    for path in sorted(FIXTURES.glob("*.json")):
        for index, record in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            records.append({**record, "format": path.stem, "id": f"{path.stem}-{index}"})
    return records


def session_tools(records: list[dict[str, Any]]) -> set[str]:
    """The tool names a session offering every fixture's tools would have (ours included)."""
    names = {"text2image", "image2canny", "canny2image", "image_captioning"}
    for record in records:
        names |= {call["name"] for call in record.get("expected", [])}
        if record.get("invalid", {}).get("name") not in (None, "unknown"):
            names.add(record["invalid"]["name"])
    return names


def check(record: dict[str, Any], tool_names: set[str], message: AIMessage | None = None) -> str | None:
    """None when the record parses as expected (or ``message``, the record as a brain read it), else what went
    wrong."""
    message = message or parse_tool_calls(record["raw"], tool_names, record.get("single_args"))
    got = [{"name": c["name"], "args": c["args"]} for c in message.tool_calls]
    if "expected" in record:
        if got != record["expected"] or message.invalid_tool_calls:
            return f"calls {got}, invalid {[c['name'] for c in message.invalid_tool_calls]}"
        if "content" in record and message.content != record["content"]:
            return f"content {message.content!r}"
    elif "answer" in record:
        if got or message.invalid_tool_calls or message.content != record["answer"].strip():
            return f"calls {got}, content {message.content!r}"
    else:
        names = [c["name"] for c in message.invalid_tool_calls]
        errors = [c["error"] for c in message.invalid_tool_calls]
        if got or names != [record["invalid"]["name"]] or not all(errors):
            return f"calls {got}, invalid {names}"
    return None


def main() -> None:
    records = load_records()
    tools = session_tools(records)
    rows: dict[str, list[int]] = {}
    for record in records:
        ok = check(record, tools) is None
        row = rows.setdefault(record["format"], [0, 0, 0])
        row[0] += ok
        row[1] += 1
        row[2] += record["source"].startswith("http")
    print("| fixtures | parsed as expected | of them from public threads |")
    print("|---|---|---|")
    for name, (ok, total, public) in rows.items():
        print(f"| {name} | {ok} of {total} | {public} |")
    ok = sum(r[0] for r in rows.values())
    total = sum(r[1] for r in rows.values())
    public = sum(r[2] for r in rows.values())
    print(f"\n{ok} of {total} parsed as expected ({public} recorded in public issue threads)")
    print("recognised by:", ", ".join(sorted({recognised_by(r["raw"], tools) or "none" for r in records})))


if __name__ == "__main__":
    main()
