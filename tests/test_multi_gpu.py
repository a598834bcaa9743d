"""Several GPUs: ``auto`` placement on fake inventories of 2 GPUs, and one queue per GPU.

(tests/test_placement.py covers 0, 1 and 8 GPUs; measuring on several real GPUs is a separate issue.)
"""

from __future__ import annotations

import threading
import time

from foundation_models.family import Family
from orchestrator.cards import load_cards, parse_cards
from orchestrator.devices import CPU, cuda_device
from orchestrator.engine import Orchestrator
from orchestrator.placement import make_plan
from orchestrator.spec import parse_budgets, parse_load_spec

CARDS = load_cards()
ALL_AUTO = ",".join(f"{name}_auto" for name in CARDS.names())
SD_USERS = [n for n in CARDS.names() if "sd15_base" in CARDS[n].shares]


def plan(spec: str, devices, max_vram=None):
    return make_plan(CARDS, parse_load_spec(spec, CARDS), devices, parse_budgets(max_vram))


def test_two_gpus_everything_auto_fits_and_the_sd_base_loads_once():
    p = plan(ALL_AUTO, [CPU, cuda_device(0, 24_000), cuda_device(1, 24_000)])
    assert {pl.device for pl in p.placements.values()} <= {"cuda:0", "cuda:1"}
    assert len({p.device_of(n) for n in SD_USERS}) == 1
    for load in p.devices.values():
        assert load.total_mb <= load.capacity_mb


def test_two_gpus_the_sd_family_goes_where_there_is_room_and_the_rest_fills_the_other():
    sd_total = sum(CARDS.groups["sd15_base"].components.values())
    small = cuda_device(0, sd_total + 500)  # room for the base and little else
    p = plan("Text2Image_auto,InstructPix2Pix_auto,ImageCaptioning_auto", [CPU, small, cuda_device(1, 6_000)])
    assert (
        p.device_of("Text2Image") == p.device_of("InstructPix2Pix") == "cuda:1"
    )  # pix2pix reuses the VAE there
    assert p.device_of("ImageCaptioning") == "cuda:0"
    for load in p.devices.values():
        assert load.total_mb <= load.capacity_mb


def test_two_gpus_with_budgets_each_gpu_takes_turns_on_its_own():
    p = plan(ALL_AUTO, [CPU, cuda_device(0, 81_000), cuda_device(1, 81_000)], "cuda:0=8GiB,cuda:1=8GiB")
    assert {pl.device for pl in p.placements.values()} <= {"cuda:0", "cuda:1"}
    assert {p.budget_of(d) for d in ("cuda:0", "cuda:1") if d in p.devices} == {8192}


FAKE = {"cards": {
    "A": {"family": "fake", "dtype": "float16", "vram_mb": 100, "tools": []},
    "B": {"family": "fake", "dtype": "float16", "vram_mb": 100, "tools": []},
}}  # fmt: skip


def declared(fake) -> Family:
    """A test family object as the manager takes families: its FAMILY declaration."""
    return Family("fake", fake.load, getattr(fake, "load_component", None))


class SlowFamily:
    class Model:
        def to(self, device: str) -> None:
            pass

    def load(self, ctx):
        return self.Model()


def test_one_queue_per_gpu_two_gpus_run_at_the_same_time(tmp_path):
    devices = [CPU, cuda_device(0, 1_000), cuda_device(1, 1_000)]
    orch = Orchestrator("A_cuda:0,B_cuda:1", cards=parse_cards(FAKE), devices=devices,
                        families={"fake": declared(SlowFamily())}, session_root=tmp_path)  # fmt: skip
    inside, overlap, lock = [], [], threading.Lock()

    def use(card: str) -> None:
        with orch.manager.use(card):
            with lock:
                inside.append(card)
                overlap.append(len(inside))
            time.sleep(0.2)
            with lock:
                inside.remove(card)

    threads = [threading.Thread(target=use, args=(card,)) for card in ("A", "B")]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(overlap) == 2, "models on different GPUs must not wait for each other"
    assert time.perf_counter() - started < 0.35
