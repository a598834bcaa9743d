"""Choosing a brain, the prompts' languages, and the history budget: pure functions, no model."""

from __future__ import annotations

import pytest
import yaml
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from orchestrator.brain import BrainConfig, BrainError, brain_from
from orchestrator.brain.history import dump, estimate_tokens, load, trim
from orchestrator.brain.prompts import detect_language, load_prompt, prompts_dir, system_prompt
from orchestrator.settings import Settings


@pytest.fixture
def no_llm_env(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return monkeypatch


def test_default_brain_is_openai_only_when_configured(no_llm_env):
    config = BrainConfig.from_spec(None, Settings.from_env())
    assert (config.kind, config.fallback) == ("rules", True)
    no_llm_env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    config = BrainConfig.from_spec(None, Settings.from_env())
    assert (config.kind, config.base_url) == ("openai", "http://127.0.0.1:11434/v1")
    assert BrainConfig.from_spec("rules").fallback is False  # chosen, not a fallback


def test_settings_read_the_environment_once_and_arguments_win(no_llm_env, tmp_path):
    no_llm_env.setenv("VISUAL_ORCHESTRATOR_FAST", "0")
    no_llm_env.setenv("VISUAL_ORCHESTRATOR_CACHE", str(tmp_path))
    settings = Settings.from_env()
    assert (settings.fast, settings.compile, settings.cache_dir) == (False, True, tmp_path)
    assert settings.sessions_dir == tmp_path / "sessions" and settings.inductor_dir == tmp_path / "inductor"
    no_llm_env.setenv("VISUAL_ORCHESTRATOR_FAST", "1")
    assert settings.fast is False, "frozen: a later change of the environment does not reach it"
    assert Settings.from_env(fast=False, compile_helper=False).compile_helper is False
    with pytest.raises(TypeError, match="unknown setting 'fsat'"):
        Settings.from_env(fsat=False)


def test_brain_specs(no_llm_env):
    config = BrainConfig.from_spec("hf:Qwen/Qwen2.5-1.5B-Instruct", quant="int4", trust_remote_code=True)
    assert (config.kind, config.model, config.quant, config.trust_remote_code) == (
        "hf", "Qwen/Qwen2.5-1.5B-Instruct", "int4", True)  # fmt: skip
    with pytest.raises(
        BrainError, match=r"^Unknown brain 'llama': use auto, openai, rules or hf:<model id or folder>\.$"
    ):
        BrainConfig.from_spec("llama")
    with pytest.raises(BrainError, match="use int8 or int4"):
        BrainConfig.from_spec("hf:x", quant="int3")
    with pytest.raises(BrainError, match="applies only to a local model"):
        BrainConfig.from_spec("rules", quant="int8")
    with pytest.raises(BrainError, match="needs OPENAI_API_KEY .* or OPENAI_BASE_URL"):
        BrainConfig.from_spec("openai")


def test_a_ready_brain_object_can_be_plugged_in():
    class Echo:
        def respond(self, messages, tools, turn, timeout):
            return AIMessage(turn.text)

    holder = brain_from(Echo(), max_steps=3)
    assert holder.loaded and holder.label == "custom" and holder.config.max_steps == 3
    with pytest.raises(TypeError):
        brain_from(42)


@pytest.mark.parametrize(
    "text, default, language",
    [
        ("draw a cat", "zh", "en"),
        ("画一只猫", "en", "zh"),
        ("把 image/1a2b3c4d.png 变成 canny 边缘图", "en", "zh"),
        ("draw a cat named 小花", "zh", "en"),
        ("/text2image prompt=一只猫", "en", "zh"),
        ("/image2canny image=image/1a2b3c4d.png", "zh", "zh"),  # nothing to tell: the default
        ("", "zh", "zh"),
    ],
)
def test_language_is_detected_per_turn(text, default, language):
    assert detect_language(text, default) == language


def test_prompts_exist_in_both_languages_and_state_the_rules():
    for language, needle in (("en", "Never invent an image name"), ("zh", "绝不编造图片名")):
        prompt = system_prompt(language, ["image/1a2b3c4d.png", "image/5e6f7a8b.png"])
        assert needle in prompt and prompt.count("image/5e6f7a8b.png") == 2  # listed, and named newest
    messages = yaml.safe_load(load_prompt("messages.yaml"))
    model_facing = {"bad_arguments", "tool_skipped", "too_many_tool_calls"}
    assert all("en" in m and ("zh" in m or key in model_facing) for key, m in messages.items())
    assert (prompts_dir() / "react.md").is_file() and (prompts_dir() / "rules.yaml").is_file()


def test_token_estimate_needs_no_tokenizer_and_counts_chinese():
    assert estimate_tokens("a" * 400) == 100
    assert estimate_tokens("猫" * 100) == 100


def test_trimming_drops_whole_old_turns():
    turns = [
        HumanMessage("old " * 200),
        AIMessage("", tool_calls=[{"name": "text2image", "args": {"prompt": "x"}, "id": "c1"}]),
        ToolMessage("Generated image/1a2b3c4d.png", tool_call_id="c1", name="text2image"),
        AIMessage("done"),
        HumanMessage("new"),
        AIMessage("ok"),
    ]
    kept = trim(load(dump(turns)), budget=50)
    assert [m.content for m in kept] == ["new", "ok"]  # never a tool result without its call
    assert trim(turns, budget=10_000) == turns
    assert trim(turns, budget=1) == []
