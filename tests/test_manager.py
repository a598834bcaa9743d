"""The model manager with fake families: lazy, once, shared, LRU under a budget, OOM -> retry -> clear error."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Annotated

import torch

from foundation_models.family import Family
from foundation_models.fastpath.compiler import BackgroundCompiler
from foundation_models.fastpath.helper import HELPER_OVERHEAD_MB
from foundation_models.fastpath.regions import REGIONS
from orchestrator.cards import parse_cards
from orchestrator.devices import CPU, cuda_device
from orchestrator.engine import Orchestrator
from orchestrator.tools import ToolContext, tool

CARDS = {
    "groups": {"base": {"family": "fake", "checkpoint": "org/base", "dtype": "float16",
                        "components": {"big": 1000, "small": 100}}},
    "cards": {
        "A": {"family": "fake", "dtype": "float16", "vram_mb": 1000, "tools": [], "shares": ["base"]},
        "B": {"family": "fake", "dtype": "float16", "vram_mb": 1000, "tools": [], "shares": {"base": ["small"]}},
        "C": {"family": "fake", "dtype": "float16", "vram_mb": 500, "tools": []},
        "Combo": {"family": "fake", "dtype": "float32", "vram_mb": 0, "tools": [], "depends_on": ["C"]},
    },
}  # fmt: skip


class FakeModel:
    def __init__(self, name: str, device: str, parts: dict):
        self.name, self.device, self.parts = name, device, parts

    def to(self, device: str) -> None:
        self.device = device


def declared(fake) -> Family:
    """A test family object as the manager takes families: its FAMILY declaration."""
    return Family("fake", fake.load, getattr(fake, "load_component", None))


class FakeFamily:
    """Counts loads; optionally slow, or raising an injected error from run()."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.loads: list[str] = []
        self.components: list[str] = []
        self.fail_next = 0
        self._lock = threading.Lock()

    def load(self, ctx):
        time.sleep(self.delay)
        with self._lock:
            self.loads.append(ctx.card.name)
        parts = {f"{g}/{c}": ctx.component(g, c) for g, comps in ctx.card.shares.items() for c in comps}
        return FakeModel(ctx.card.name, ctx.device, parts)

    def load_component(self, ctx, group, component):
        time.sleep(self.delay)
        with self._lock:
            self.components.append(f"{group.name}/{component}")
        return FakeModel(component, ctx.device, {})


def make(spec: str, devices=(CPU,), max_vram=None, delay=0.0, tmp_path=None):
    family = FakeFamily(delay)
    orch = Orchestrator(spec, cards=parse_cards(CARDS), devices=list(devices), max_vram=max_vram,
                        families={"fake": declared(family)}, session_root=tmp_path)  # fmt: skip
    return orch, family


def states(orch) -> dict[str, str]:
    return {s.card: s.state for s in orch.manager.status()}


def test_nothing_loads_at_start_and_first_use_loads(tmp_path):
    orch, family = make("A_cpu,C_cpu", tmp_path=tmp_path)
    assert family.loads == [] and set(states(orch).values()) == {"not loaded"}
    with orch.manager.use("A") as model:
        assert model.name == "A"
    assert family.loads == ["A"] and states(orch) == {"A": "resident", "C": "not loaded"}
    with orch.manager.use("A"):
        pass
    assert family.loads == ["A"]


def test_two_sessions_at_the_same_moment_load_once(tmp_path):
    orch, family = make("A_cpu,B_cpu", delay=0.2, tmp_path=tmp_path)
    barrier = threading.Barrier(8)
    seen = []

    def worker(card):
        barrier.wait()
        with orch.manager.use(card) as model:
            seen.append(model)

    threads = [threading.Thread(target=worker, args=("A" if i % 2 else "B",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(family.loads) == ["A", "B"]
    assert sorted(family.components) == [
        "base/big",
        "base/small",
    ]  # "small" once, although A and B both use it
    a_models = {id(m) for m in seen if m.name == "A"}
    assert len(a_models) == 1


def test_shared_component_is_the_same_object(tmp_path):
    orch, family = make("A_cpu,B_cpu", tmp_path=tmp_path)
    with orch.manager.use("A") as a:
        pass
    with orch.manager.use("B") as b:
        pass
    assert a.parts["base/small"] is b.parts["base/small"]


def test_composite_pulls_in_its_dependency(tmp_path):
    orch, family = make("Combo_cpu", tmp_path=tmp_path)
    assert set(states(orch)) == {"C", "Combo"}
    with orch.manager.use("C"):
        pass
    assert family.loads == ["C"]


def test_lru_offload_under_a_budget(tmp_path):
    gpu = cuda_device(0, 80_000)
    orch, family = make("A_cuda:0,C_cuda:0,B_cuda:0", devices=(CPU, gpu), max_vram="cuda:0=2600MiB",
                        tmp_path=tmp_path)  # fmt: skip
    with orch.manager.use("A") as a:  # A + base (1100) = 2100
        pass
    with orch.manager.use("C"):  # +500 = 2600: fits
        pass
    assert states(orch) == {"A": "resident", "C": "resident", "B": "not loaded"}
    with orch.manager.use("B"):  # +1000: A is least recently used -> offloaded with base/big
        pass
    assert states(orch) == {"A": "offloaded", "C": "resident", "B": "resident"}
    assert a.device == "cpu" and a.parts["base/big"].device == "cpu"
    assert a.parts["base/small"].device == "cuda:0"  # still used by B
    assert orch.manager.resident_mb("cuda:0") <= 2600
    with orch.manager.use("A") as again:  # C is now the LRU
        assert again is a and a.device == "cuda:0" and a.parts["base/big"].device == "cuda:0"
    assert states(orch)["C"] == "offloaded"
    assert family.loads == ["A", "C", "B"], "swapping moves weights; it never reloads from disk"


def with_working_memory(card: str, mb: int) -> dict:
    cards = {**CARDS["cards"], card: {**CARDS["cards"][card], "working_mb": mb}}
    return {**CARDS, "cards": cards}


def test_a_budget_keeps_room_for_the_calls_working_memory(tmp_path):
    """Weights that fit the budget are not enough: C's call takes 400 MB more, so A makes way for it."""
    orch = Orchestrator("A_cuda:0,C_cuda:0", cards=parse_cards(with_working_memory("C", 400)),
                        devices=[CPU, cuda_device(0, 80_000)], max_vram="cuda:0=2600MiB",
                        families={"fake": declared(FakeFamily())}, session_root=tmp_path)  # fmt: skip
    with orch.manager.use("A"):  # A + base = 2100
        pass
    with orch.manager.use("C"):  # 2100 + 500 fits the budget, but not with 400 more to run
        assert states(orch) == {"A": "offloaded", "C": "resident"}
    with orch.manager.use("A"):  # A runs in its weights: 500 + 2100 fits
        pass
    assert states(orch) == {"A": "resident", "C": "resident"}
    with orch.manager.use("C"):  # resident, yet its call still needs the room
        pass
    assert states(orch) == {"A": "offloaded", "C": "resident"}


def test_a_budget_counts_what_the_device_holds_beyond_the_weights(tmp_path):
    """On CUDA the manager reads what the allocator holds (graph pools, cached blocks): 600 MB more than the
    weights here, so C (500) no longer fits beside A (2100) under 2600."""
    orch, _ = make("A_cuda:0,C_cuda:0", devices=(CPU, cuda_device(0, 80_000)), max_vram="cuda:0=2600MiB",
                   tmp_path=tmp_path)  # fmt: skip
    held = {"extra": 0}
    orch.manager.memory_probe = lambda device: orch.manager.resident_mb(device) + held["extra"]
    with orch.manager.use("A"):
        pass
    with orch.manager.use("C"):
        pass
    assert states(orch) == {"A": "resident", "C": "resident"}, "nothing held beyond the weights: both fit"
    held["extra"] = 600
    with orch.manager.use("A"):
        pass
    assert states(orch) == {"A": "resident", "C": "offloaded"}


def test_a_cuda_budget_caps_torchs_allocator(tmp_path):
    """--max-vram is a hard cap on CUDA: torch's allocator is told the budget (plus what an hf brain keeps there)
    before the first model loads, once; a CPU budget caps nothing."""
    gpu = replace(cuda_device(0, 80_000), reserved_mb=300)
    orch, _ = make(
        "A_cuda:0,C_cpu", devices=(CPU, gpu), max_vram="cuda:0=2600MiB,cpu=4GiB", tmp_path=tmp_path
    )
    caps = []
    orch.manager.allocator_cap = lambda device, mb: caps.append((device, mb))
    for card in ("A", "C", "A"):
        with orch.manager.use(card):
            pass
    assert caps == [("cuda:0", 2900)]


def helper_budget(tmp_path, extra=0, budget=2600):
    """A (2100 with base) and C (500) under 2600 MB; the allocator shows ``extra`` MB beyond the weights."""
    orch, _ = make("A_cuda:0,C_cuda:0", devices=(CPU, cuda_device(0, 80_000)), max_vram=f"cuda:0={budget}MiB",
                   tmp_path=tmp_path)  # fmt: skip
    caps = []
    orch.manager.allocator_cap = lambda device, mb: caps.append(mb)
    orch.manager.memory_probe = lambda device: orch.manager.resident_mb(device) + extra
    return orch, caps


def test_the_compile_helpers_memory_counts_in_the_budget(tmp_path):
    """The compile helper (another process) gets room only as models are evicted for it, and only while the
    largest card can still run beside it; the allocator's cap leaves its share out."""
    orch, caps = helper_budget(tmp_path)
    with orch.manager.use("C"):
        pass
    with orch.manager.use("A"):
        pass
    stopped = []
    fits = orch.manager.fits_beside_largest_call
    assert not fits("cuda:0", 600) and fits("cuda:0", 500)
    assert not orch.manager.reserve_for_helper("cuda:0", 600, lambda: stopped.append(1)), (
        "A (2100) + 600 > 2600"
    )
    assert orch.manager.reserve_for_helper("cuda:0", 400, lambda: stopped.append(1))
    assert states(orch) == {"A": "resident", "C": "offloaded"}, "C, least recently used, made way for it"
    assert caps[-1] == 2200 and not stopped
    with orch.manager.use("C"):  # 2100 + 400 held: C's 500 needs A out of the way, not the helper's memory
        pass
    assert states(orch) == {"A": "offloaded", "C": "resident"} and not stopped
    orch.manager.release_helper_reservation("cuda:0")
    assert caps[-1] == 2600
    with orch.manager.use("A"):
        pass
    assert states(orch) == {"A": "resident", "C": "resident"}, "the helper's room is free again"


def test_no_room_for_the_helper_beside_a_model_in_use(tmp_path):
    """A model running now cannot be evicted: the helper gets no room rather than a cap below what is in use."""
    orch, caps = helper_budget(tmp_path, extra=300)  # A's 2100 + 300 beyond the weights, while it runs
    with orch.manager.use("A"):
        assert not orch.manager.reserve_for_helper("cuda:0", 400, lambda: None), "2400 in use + 400 > 2600"
    assert caps == [2600], "the allocator's cap never went below what A was using"
    assert orch.manager.reserve_for_helper("cuda:0", 400, lambda: None), "A done: it can make way now"
    assert states(orch)["A"] == "offloaded" and caps[-1] == 2200


def test_the_background_compiler_holds_the_helpers_room_through_the_manager(tmp_path):
    orch, caps = helper_budget(tmp_path, budget=3000)
    compiler = BackgroundCompiler(regions=REGIONS, budget=orch.manager)
    assert compiler.reservations.reserve("cuda:0", torch.nn.Linear(4, 4))  # weights ~0: the overhead alone
    assert caps[-1] == 3000 - HELPER_OVERHEAD_MB
    compiler.reservations.release_all()
    assert caps[-1] == 3000


def test_a_call_that_cannot_fit_beside_the_helper_stops_it(tmp_path):
    """Graph pools and cached blocks (300 MB here) are not known when the helper gets its room; a call that no
    longer fits after every eviction takes the helper's memory back, and an OOM does the same."""
    orch, caps = helper_budget(tmp_path, extra=300)
    stopped = []
    assert orch.manager.reserve_for_helper("cuda:0", 400, lambda: stopped.append("A"))
    with orch.manager.use("A"):  # 300 + 400 + 2100 > 2600 even with nothing else resident
        assert stopped == ["A"] and caps[-1] == 2600
    assert orch.manager.reserve_for_helper("cuda:0", 100, lambda: stopped.append("OOM"))
    orch.manager.free_memory(["cuda:0"])
    assert stopped == ["A", "OOM"] and caps[-1] == 2600


def test_cpu_budget_unloads_instead_of_offloading(tmp_path):
    orch, family = make("C_cpu,A_cpu", max_vram="cpu=2200MiB", tmp_path=tmp_path)
    with orch.manager.use("C"):
        pass
    with orch.manager.use("A"):
        pass
    assert states(orch) == {"C": "not loaded", "A": "resident"}
    with orch.manager.use("C"):
        pass
    assert family.loads == ["C", "A", "C"]


# -- out of memory, through a session ------------------------------------------------------------
@tool(card="C")
def flaky(ctx: ToolContext, times: Annotated[int, "how many OOMs to raise"]) -> str:
    """Raise CUDA out-of-memory `times` times over the tool's life, then succeed."""
    with ctx.model() as model:
        calls = model.parts.setdefault("calls", [])
        calls.append(1)
        if len(calls) <= times:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return "ok"


def session_with_flaky(tmp_path, family_calls=None):
    orch, family = make("A_cpu,C_cpu", tmp_path=tmp_path)
    orch.tools = {"flaky": flaky}
    return orch, family, orch.new_session()


def test_oom_evicts_others_and_retries_once(tmp_path):
    orch, family, session = session_with_flaky(tmp_path)
    with orch.manager.use("A"):
        pass
    call = session.call_tool("flaky", {"times": 1})
    assert call.error is None and call.output == "ok"
    assert states(orch)["A"] == "not loaded", "other models were unloaded to make room"


def test_oom_twice_is_a_clear_error_and_the_session_goes_on(tmp_path):
    orch, family, session = session_with_flaky(tmp_path)
    call = session.call_tool("flaky", {"times": 2})
    assert "flaky ran out of memory on cpu even after unloading other models" in call.error
    assert call.output.startswith("Error: ")
    assert session.call_tool("flaky", {"times": 2}).output == "ok"  # the third call works: nothing is broken
    assert [c.error is None for c in session.trace] == [False, True]


def test_a_failing_load_is_an_error_and_can_be_retried(tmp_path):
    orch, family = make("C_cpu", tmp_path=tmp_path)
    broken = SimpleNamespace(load=lambda ctx: (_ for _ in ()).throw(OSError("disk on fire")))
    orch.manager._families["fake"] = broken
    orch.tools = {"flaky": flaky}
    session = orch.new_session()
    call = session.call_tool("flaky", {"times": 0})
    assert "flaky failed unexpectedly (OSError: disk on fire)" in call.error
    assert states(orch)["C"] == "not loaded"
    orch.manager._families["fake"] = family
    assert session.call_tool("flaky", {"times": 0}).output == "ok"


def test_models_are_built_while_the_background_compiler_cannot_trace(tmp_path):
    """Building a model changes torch's process-wide default dtype for a moment (transformers does); the compiler's
    tracing saves and restores it, so the two take turns on torch_state.TORCH_GLOBALS."""
    from foundation_models.fastpath.torch_state import TORCH_GLOBALS

    held: list[bool] = []

    class Watching(FakeFamily):
        def load(self, ctx):
            probe = threading.Thread(target=lambda: held.append(not TORCH_GLOBALS.acquire(blocking=False)))
            probe.start()
            probe.join()
            return super().load(ctx)

        def load_component(self, ctx, group, component):
            return self.load(
                SimpleNamespace(card=SimpleNamespace(name=component, shares={}), device=ctx.device)
            )

    orch = Orchestrator("A_cpu", cards=parse_cards(CARDS), devices=[CPU], families={"fake": declared(Watching())},
                        session_root=tmp_path)  # fmt: skip
    with orch.manager.use("A"):
        pass
    assert held == [True, True, True]  # the card and its two shared components, each built under the lock
