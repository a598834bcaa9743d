"""The ``hf:<id-or-path>`` brain: a transformers chat model in this process.

Tools go to the model through its own chat template (Qwen2.5/3, Llama 3.x, GLM-4 and Hermes-style
templates take ``tools=``); the calls it writes are parsed by ``parsers.parse_tool_calls``. A model
whose template knows no tools gets the ReAct text format instead. ``--quant int8|int4`` loads the
weights with bitsandbytes, which needs CUDA and the ``local-llm`` extra.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage

from .base import BrainConfig, BrainError, TurnInfo
from .history import chat_dict, remind_language
from .openai_chat import tool_specs
from .parsers import parse_tool_calls
from .react import parse_react, react_messages, single_args
from .streaming import CallGuard, ReactGuard, drain

if TYPE_CHECKING:
    from ..tools import Tool

log = logging.getLogger(__name__)


class HFBrain:
    def __init__(self, config: BrainConfig):
        self.config = config
        self.name = str(config.model)
        self._lock = threading.Lock()
        self.tokenizer, self.model, self.device = load_chat_model(config)
        template = str(self.tokenizer.chat_template or "")
        self.native = config.tool_format == "native" or (config.tool_format == "auto" and "tools" in template)
        log.info(
            "hf brain %s on %s (%s tool calls)", self.name, self.device, "native" if self.native else "ReAct"
        )

    def __repr__(self) -> str:
        return f"HFBrain({self.name} on {self.device})"

    def respond(
        self, messages: list[BaseMessage], tools: list[Tool], turn: TurnInfo, timeout: float
    ) -> AIMessage:
        return drain(self.stream(messages, tools, turn, timeout))

    def stream(
        self, messages: list[BaseMessage], tools: list[Tool], turn: TurnInfo, timeout: float
    ) -> Generator[str, None, AIMessage]:
        """The next message, its text yielded token by token (never a tool call being written); returns it."""
        messages = remind_language(messages, turn.language)
        names = [t.name for t in tools]
        if self.native:
            chat = [chat_dict(m) for m in messages]
            text = yield from self._generate(chat, tool_specs(tools) or None, timeout, CallGuard(names))
            return parse_tool_calls(text, names, single_args(tools))
        chat = [chat_dict(m) for m in react_messages(messages, tools)]
        text = yield from self._generate(chat, None, timeout, ReactGuard())
        return parse_react(text, tools)

    def _generate(
        self, chat: list[dict[str, Any]], tools: list[dict[str, Any]] | None, timeout: float,
        guard: CallGuard | ReactGuard,
    ) -> Generator[str, None, str]:  # fmt: skip
        """Generate in a worker thread, yielding the shown text as tokens are decoded; returns the whole text.
        Closing the generator (the turn was stopped) stops the generation at the next token."""
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        tok = self.tokenizer
        try:
            encoded = self._encode(chat, tools).to(self.device)
        except Exception as exc:
            raise self._failed(exc) from exc
        stopped = threading.Event()
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        stop = {} if self.native else {"stop_strings": ["Observation:"], "tokenizer": tok}
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(
                        **encoded,
                        max_new_tokens=self.config.max_new_tokens,
                        do_sample=False,
                        max_time=max(1.0, timeout),
                        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_Stopped(stopped)]),
                        **stop,
                    )
            except BaseException as exc:  # reported by the reading side, with the model's name
                failure.append(exc)
                streamer.end()

        text = ""
        with self._lock:
            worker = threading.Thread(target=work, name=f"generate-{self.name}", daemon=True)
            worker.start()
            try:
                for piece in streamer:
                    text += piece
                    shown = guard.feed(piece)
                    if shown:
                        yield shown
            finally:
                stopped.set()
                worker.join()
        if failure:
            raise self._failed(failure[0]) from failure[0]
        return text

    def _failed(self, exc: BaseException) -> BrainError:
        log.error("generation failed in %s", self.name, exc_info=exc)
        return BrainError("hf_failed", model=self.name, reason=f"{type(exc).__name__}: {str(exc)[:160]}")

    def _encode(self, chat: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> Any:
        from jinja2 import TemplateError

        tok = self.tokenizer
        if not tok.chat_template:  # a base model: a plain transcript
            lines = [f"{m['role'].capitalize()}: {m['content']}" for m in chat]
            return tok("\n".join([*lines, "Assistant:"]), return_tensors="pt")
        options = {
            "add_generation_prompt": True,
            "return_dict": True,
            "return_tensors": "pt",
            "enable_thinking": False,
        }
        try:
            return tok.apply_chat_template(chat, tools=tools, **options)
        except TemplateError:  # e.g. "System role not supported": fold the system prompt into the first turn
            if chat and chat[0]["role"] == "system" and len(chat) > 1:
                merged = {**chat[1], "content": f"{chat[0]['content']}\n\n{chat[1]['content']}"}
                return tok.apply_chat_template([merged, *chat[2:]], tools=tools, **options)
            raise


class _Stopped:
    """A stopping criterion that ends generation once the turn is stopped (``event`` set)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


def load_chat_model(config: BrainConfig) -> tuple[Any, Any, str]:
    """(tokenizer, model, device) for an hf brain, with its --adapter if one is named; a missing model, adapter or
    unusable --quant is a BrainError."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = config.device or (
        "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    )
    kwargs: dict[str, Any] = {"trust_remote_code": config.trust_remote_code}
    if device != "cpu":  # int8 matmuls want float16 activations; otherwise bfloat16 where the GPU has it
        bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported() and config.quant != "int8"
        kwargs["dtype"] = torch.bfloat16 if bf16 else torch.float16
    if config.quant:
        if not device.startswith("cuda"):
            raise BrainError("quant_needs_cuda", quant=config.quant)
        if importlib.util.find_spec("bitsandbytes") is None:
            raise BrainError("bnb_missing", quant=config.quant)
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True)
            if config.quant == "int8"
            else BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=kwargs["dtype"]
            )
        )
        kwargs["device_map"] = {"": device}
    try:
        tokenizer = AutoTokenizer.from_pretrained(config.model, trust_remote_code=config.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(config.model, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        reason = str(exc).strip().split("\n")[0][:200]
        if "trust_remote_code" in str(exc):
            reason = "it runs its own code: add --trust-remote-code if you trust it"
        raise BrainError("hf_missing", model=config.model, reason=reason) from exc
    if config.adapter:
        model = _with_adapter(model, config)
    if not config.quant:
        model.to(device)
    model.eval()
    return tokenizer, model, device


def _with_adapter(model: Any, config: BrainConfig) -> Any:
    """The model with the peft adapter ``config.adapter`` (LoRA, prefix tuning or trained layers) over it."""
    from pathlib import Path

    if importlib.util.find_spec("peft") is None:
        raise BrainError("peft_missing", adapter=config.adapter)
    from peft import PeftModel

    if not (Path(str(config.adapter)) / "adapter_config.json").is_file():
        raise BrainError("adapter_missing", adapter=config.adapter)
    base_dtype = model.dtype
    return keep_prefix_in_generate(
        match_adapter_dtype(PeftModel.from_pretrained(model, str(config.adapter)), base_dtype)
    )


def keep_prefix_in_generate(model: Any) -> Any:
    """A prefix-tuned peft model whose prefix reaches ``generate`` (other models as they are).

    peft (0.21) hands the trained prefix to the model as ``past_key_values``; transformers 5 generates with its own
    ``cache`` and ignores ``past_key_values`` ("Both `past_key_values` and `cache` are set ... ignoring"), so the
    adapter silently did nothing when served or scored. The prefix becomes the cache of the first step; the copy
    peft injects again at every later step is dropped (the cache already holds it)."""
    config = getattr(model, "active_peft_config", None)
    if config is None or str(getattr(config, "peft_type", "")).split(".")[-1] != "PREFIX_TUNING":
        return model
    prepare = model.prepare_inputs_for_generation

    def with_prefix(*args: Any, **kwargs: Any) -> dict[str, Any]:
        inputs = prepare(*args, **kwargs)
        if "cache" in inputs and inputs.get("past_key_values") is not None:
            prefix = inputs.pop("past_key_values")
            if inputs["cache"] is None or not inputs["cache"].get_seq_length():
                inputs["cache"] = prefix
        return inputs

    model.prepare_inputs_for_generation = with_prefix
    return model


def match_adapter_dtype(model: Any, dtype: Any) -> Any:
    """The floating-point weights peft added (LoRA matrices, a prefix encoder) cast to the base model's ``dtype``.

    peft keeps them in float32 over a bfloat16/float16 base; outside autocast that mix fails as "self and mat2 must
    have the same dtype" (LoRA) or in attention, where a float32 prefix meets float16 keys (prefix tuning)."""
    for name, param in model.named_parameters():
        if (
            param.is_floating_point()
            and param.dtype != dtype
            and ("lora_" in name or "prompt_encoder" in name)
        ):
            param.data = param.data.to(dtype)
    return model
