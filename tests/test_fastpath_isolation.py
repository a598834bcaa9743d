"""Two Orchestrators in one process each own their fast path: compiler, compile helper, budget keeper.

Only what is process-wide by nature (torch's global state, the CUDA rule against capturing beside GPU work) is
shared, as one lock each; a budget given to one Orchestrator never reaches another one's compiler.
"""

from __future__ import annotations

import torch
from test_fastpath_compiler import CountingCompile
from test_fastpath_graphs import Denoiser, FakeGraphs, call

from foundation_models.fastpath.graphs import graphed, runner_for
from orchestrator.devices import CPU, cuda_device
from orchestrator.engine import Orchestrator


def budgeted(tmp_path):
    return Orchestrator("Text2Image_cuda:0", devices=[CPU, cuda_device(0, 80_000, 70_000)],
                        max_vram="cuda:0=8GiB", weights="tiny", session_root=tmp_path)  # fmt: skip


def unbudgeted(tmp_path):
    return Orchestrator("Text2Image_cpu", weights="tiny", session_root=tmp_path)


def compile_twice(orch, model):
    """Calls that queue a compile on this orchestrator's compiler (a counting stand-in for inductor)."""
    compile_fn = CountingCompile()
    orch.fastpath.compiler.regions.compile_fn = compile_fn
    runner_for(model, FakeGraphs())
    with torch.inference_mode(), graphed([model], compiler=orch.fastpath.compiler):
        call(model), call(model)
        assert orch.fastpath.compiler.wait(30)
        call(model)
    return compile_fn


def test_each_orchestrator_has_its_own_fast_path_and_budget_keeper(tmp_path):
    plain = unbudgeted(tmp_path)
    first = budgeted(tmp_path)
    second = budgeted(tmp_path)  # used to rewire the process's one compiler to its own manager
    paths = [plain.fastpath, first.fastpath, second.fastpath]
    assert len({id(p) for p in paths}) == 3 and len({id(p.compiler) for p in paths}) == 3
    assert (
        len({id(p.compiler.helper) for p in paths}) == 3 and len({id(p.compiler.regions) for p in paths}) == 3
    )
    assert plain.fastpath.helper_budget is None, "no budget: the helper's memory is nobody's to keep"
    assert first.fastpath.helper_budget is first.manager and second.fastpath.helper_budget is second.manager
    with plain.manager.use("Text2Image") as model:  # (the budgeted ones' cuda:0 is only pretended)
        assert model.fastpath is plain.fastpath, "the families get the fast path from their load context"


def test_using_one_fast_path_leaves_the_other_alone(tmp_path):
    plain, budget = unbudgeted(tmp_path), budgeted(tmp_path)
    torch.manual_seed(0)
    compiled = compile_twice(budget, Denoiser().eval())
    assert compiled.compiled == 1 and budget.fastpath.compiler.jobs_submitted == 1
    assert plain.fastpath.compiler.jobs_submitted == 0 and not plain.fastpath.compiler.busy()
    assert plain.fastpath.compiler.regions.compiled_signatures == set()

    assert budget.fastpath.compiler.reservations.reserve("cuda:0", torch.nn.Linear(4, 4))
    assert "cuda:0" in budget.manager._helper_reserved, "reserved in its own manager's budget"
    assert plain.fastpath.compiler.reservations.reserve("cuda:0", torch.nn.Linear(4, 4))  # no budget: room
    assert plain.fastpath.compiler.reservations.held == {}
    budget.close()
    assert "cuda:0" not in budget.manager._helper_reserved, "closing gives its reservation back"

    compiled = compile_twice(plain, Denoiser().eval())  # the other one still compiles after the first closed
    assert compiled.compiled == 1 and plain.fastpath.compiler.jobs_submitted == 1


def test_what_is_process_wide_is_shared_as_one_lock(tmp_path):
    """CUDA forbids GPU work beside a capture in the whole process: every compiler holds the same lock."""
    from foundation_models.fastpath.torch_state import BACKGROUND_GPU_WORK

    a, b = unbudgeted(tmp_path), budgeted(tmp_path)
    assert a.fastpath.compiler.lock is b.fastpath.compiler.lock is BACKGROUND_GPU_WORK
