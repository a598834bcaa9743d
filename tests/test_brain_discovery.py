"""``--brain auto``: a fake Ollama on 127.0.0.1 is found and used; nothing there, garbage or a hang → rules.

tests/conftest.py turns discovery off for the suite; these tests turn it on for their own ports only.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from scripted_llm import ScriptedLLM, reply, tool_call

from orchestrator import Orchestrator
from orchestrator.brain import BrainConfig
from orchestrator.brain.discovery import choose_model, discover
from orchestrator.settings import Settings

OLLAMA_MODELS = {
    "nomic-embed-text:latest": ["embedding"],
    "llama3.2:1b": ["completion"],
    "qwen2.5:7b": ["completion", "tools"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def settings_for(*ports: int, **overrides) -> Settings:
    return Settings.from_env(discover_local_llm=True, local_llm_ports=tuple(ports), **overrides)


@pytest.fixture
def ollama():
    with ScriptedLLM(models=OLLAMA_MODELS) as llm:
        yield llm


@pytest.fixture
def garbage_port():
    class Garbage(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>it works!</html>")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def hanging_port():
    """A port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_a_fake_ollama_is_found_and_used_for_a_real_turn(ollama, tmp_path):
    ollama.add(tool_call("text2image", prompt="a cat", seed=1), reply("Here is your cat."))
    settings = settings_for(free_port(), port_of(ollama.url), weights="tiny",
                            session_root=tmp_path)  # fmt: skip
    orch = Orchestrator("Text2Image_cpu", settings=settings, brain=None)
    config = orch.brain.config
    assert (config.kind, config.base_url, config.model, config.fallback) == (
        "openai", ollama.url, "qwen2.5:7b", False)  # fmt: skip  # the model that can call tools, not the first
    assert config.notice("en") == (
        f"Brain: Ollama found on this machine at {ollama.url}, model qwen2.5:7b. "
        "Use --brain rules or --brain openai to choose otherwise."
    )
    assert "在本机" in config.notice("zh")
    result = orch.new_session().chat("draw a cat")
    assert [c.tool for c in result.tool_calls] == ["text2image"] and result.reply == "Here is your cat."
    assert [r["model"] for r in ollama.requests] == ["qwen2.5:7b", "qwen2.5:7b"]


def test_the_server_saying_which_model_calls_tools_wins_over_the_name_list():
    with ScriptedLLM(models={"qwen2.5:7b": ["completion"], "mistral:7b": ["completion", "tools"]}) as llm:
        found = discover([port_of(llm.url)])
    assert (found.name, found.model, found.tools) == ("Ollama", "mistral:7b", True)


def test_lm_studio_saying_which_model_uses_tools_is_read():
    models = {"qwen2.5-7b-instruct": [], "mistral-nemo-instruct-2407": ["tool_use"]}
    with ScriptedLLM(lmstudio=models) as llm:
        found = discover([port_of(llm.url)])
    assert (found.name, found.model, found.tools) == ("LM Studio", "mistral-nemo-instruct-2407", True)


def test_without_capabilities_the_preference_list_chooses():
    assert choose_model(["phi3:mini", "gemma2:2b", "llama3.1:8b", "qwen2.5:3b"]) == "qwen2.5:3b"
    assert choose_model(["phi3:mini", "gemma2:2b"]) == "phi3:mini"  # none known: the server's first
    with ScriptedLLM() as llm:  # an OpenAI-compatible server without Ollama's API (llama.cpp, vLLM)
        found = discover([port_of(llm.url)])
    assert (found.model, found.tools, found.name.startswith("a server on port")) == (
        "scripted-model",
        None,
        True,
    )


def test_nothing_listening_gives_the_rules_brain_with_a_notice_naming_the_command():
    started = time.perf_counter()
    config = BrainConfig.from_spec("auto", settings_for(free_port(), free_port()))
    assert time.perf_counter() - started < 2
    assert (config.kind, config.fallback, config.chosen) == ("rules", True, "none")
    assert "ollama pull qwen2.5:7b" in config.notice("en") and "ollama pull qwen2.5:7b" in config.notice("zh")


def test_garbage_and_hanging_servers_are_skipped_within_the_limit(garbage_port, hanging_port, ollama):
    started = time.perf_counter()
    assert discover([hanging_port, garbage_port, free_port()]) is None
    assert time.perf_counter() - started < 2
    ollama_port = port_of(ollama.url)
    started = time.perf_counter()
    found = discover([hanging_port, garbage_port, ollama_port])  # a hang before it does not hide it
    assert found is not None and found.base_url == ollama.url and time.perf_counter() - started < 2


def test_configured_server_wins_and_discovery_can_be_turned_off(ollama, monkeypatch):
    port = port_of(ollama.url)
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    config = BrainConfig.from_spec(
        None, Settings.from_env(env, discover_local_llm=True, local_llm_ports=(port,))
    )
    assert (config.kind, config.base_url, config.chosen) == ("openai", "http://127.0.0.1:9/v1", "env")
    assert "OPENAI_BASE_URL" in config.notice("en")
    off = Settings.from_env({"VISUAL_ORCHESTRATOR_DISCOVER": "0"}, local_llm_ports=(port,))
    assert off.discover_local_llm is False
    assert BrainConfig.from_spec(None, off).kind == "rules"
    assert ollama.requests == []  # /v1/models is a GET and not recorded; no chat was sent either way
    for named in ("rules", "hf:some/model"):  # a brain asked for by name is never replaced
        assert BrainConfig.from_spec(named, settings_for(port)).chosen == ""


def test_only_this_machine_is_ever_probed():
    with pytest.raises(ValueError, match="this machine only"):
        discover([80], host="192.168.1.1")
