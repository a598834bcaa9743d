"""A progress bar for training (a TrainerCallback): steps, the latest loss and examples per second."""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback


class ProgressCallback(TrainerCallback):
    def __init__(self, examples_per_step: int):
        self.examples_per_step = examples_per_step
        self.bar: Any = None
        self.started = 0.0
        self.first_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="finetune", unit="step")
        self.started, self.first_step = time.perf_counter(), state.global_step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any
    ) -> None:
        if self.bar is None or not logs or "loss" not in logs:
            return
        seconds = max(time.perf_counter() - self.started, 1e-9)
        rate = (state.global_step - self.first_step) * self.examples_per_step / seconds
        self.bar.set_postfix(loss=f"{logs['loss']:.4f}", ex_s=f"{rate:.1f}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
