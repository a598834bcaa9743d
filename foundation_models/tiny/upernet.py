"""Tiny openmmlab/upernet-convnext-small: UperNet on ConvNeXt with the 150 ADE20K classes.

Hub layout: config.json (with the real id2label), model.safetensors, preprocessor_config.json.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from ._common import save_quietly, seeded

if TYPE_CHECKING:
    from transformers import UperNetConfig

UPERNET_CONVNEXT_SMALL = "openmmlab/upernet-convnext-small"
_IMAGE_SIZE = 128

# ADE20K's 150 classes in id order, as in the real config's id2label ("bed " keeps its trailing space).
_ADE20K_NAMES = """
wall, building, sky, floor, tree, ceiling, road, bed , windowpane, grass, cabinet, sidewalk, person, earth,
door, table, mountain, plant, curtain, chair, car, water, painting, sofa, shelf, house, sea, mirror, rug,
field, armchair, seat, fence, desk, rock, wardrobe, lamp, bathtub, railing, cushion, base, box, column,
signboard, chest of drawers, counter, sand, sink, skyscraper, fireplace, refrigerator, grandstand, path,
stairs, runway, case, pool table, pillow, screen door, stairway, river, bridge, bookcase, blind,
coffee table, toilet, flower, book, hill, bench, countertop, stove, palm, kitchen island, computer,
swivel chair, boat, bar, arcade machine, hovel, bus, towel, light, truck, tower, chandelier, awning,
streetlight, booth, television receiver, airplane, dirt track, apparel, pole, land, bannister, escalator,
ottoman, bottle, buffet, poster, stage, van, ship, fountain, conveyer belt, canopy, washer, plaything,
swimming pool, stool, barrel, basket, waterfall, tent, bag, minibike, cradle, oven, ball, food, step, tank,
trade name, microwave, pot, animal, bicycle, lake, dishwasher, screen, blanket, sculpture, hood, sconce,
vase, traffic light, tray, ashcan, fan, pier, crt screen, plate, monitor, bulletin board, shower,
radiator, glass, clock, flag
"""


def ade20k_id2label() -> dict[int, str]:
    """The 150 ADE20K class names by id."""
    names = re.split(r",\s*", _ADE20K_NAMES.strip())
    if len(names) != 150:
        raise AssertionError(f"expected 150 ADE20K names, got {len(names)}")
    return dict(enumerate(names))


def _upernet_config() -> UperNetConfig:
    from transformers import ConvNextConfig, UperNetConfig

    backbone = ConvNextConfig(
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 1, 1],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    id2label = ade20k_id2label()
    return UperNetConfig(
        backbone_config=backbone.to_dict(),
        hidden_size=16,
        auxiliary_channels=8,
        auxiliary_in_channels=32,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
    )


def build_upernet_convnext_small(dest: Path) -> None:
    """openmmlab/upernet-convnext-small: UperNetForSemanticSegmentation and its SegformerImageProcessor."""
    from transformers import SegformerImageProcessor, UperNetForSemanticSegmentation

    with seeded(UPERNET_CONVNEXT_SMALL):
        model = UperNetForSemanticSegmentation(_upernet_config())
    save_quietly(model, dest)
    SegformerImageProcessor(
        size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}, do_reduce_labels=False
    ).save_pretrained(dest)
