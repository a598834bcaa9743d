"""Shared test setup: offline, one tiny-weights cache per test run."""

from __future__ import annotations

import os
import tempfile

# Set before anything imports huggingface_hub / gradio: every failed hub call would retry for ~20 s.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One cache folder for the whole run, so tiny checkpoints are built once and shared by every test.
os.environ.setdefault("VISUAL_ORCHESTRATOR_CACHE", tempfile.mkdtemp(prefix="vo-test-cache-"))
# An empty Hugging Face cache: tests must not depend on what this machine happens to have downloaded.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="vo-test-hf-home-")
os.environ.pop("HF_HUB_CACHE", None)
os.environ.pop("OPENAI_API_KEY", None)
os.environ.pop("OPENAI_BASE_URL", None)
# --brain auto must not find whatever LLM server this machine runs: only the tests that start a fake one
# (tests/test_brain_discovery.py) turn discovery on, for their own port.
os.environ["VISUAL_ORCHESTRATOR_DISCOVER"] = "0"
# Only the shipped personas: the user's own folder must not change what tests see.
os.environ["VISUAL_ORCHESTRATOR_PERSONAS"] = tempfile.mkdtemp(prefix="vo-test-personas-")
