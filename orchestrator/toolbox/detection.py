"""Detector tools: turn an image into a map (edges, lines, soft edges, scribble, pose, segments, depth,
normals). Each map is a new image, and the input of the matching ControlNet tool (toolbox/control.py)."""

from __future__ import annotations

from typing import Annotated

from ..tools import ImageName, ToolContext, tool

Source = Annotated[ImageName, "The image to analyse (usually a photo)"]


def _detect(ctx: ToolContext, image: str, what: str) -> str:
    picture = ctx.open(image)
    with ctx.model() as detector:
        result = detector(picture)
    name = ctx.save(result, parents=[image])
    return f"The {what} of {image} is {name}."


@tool(card="Image2Canny")
def image2canny(ctx: ToolContext, image: Source) -> str:
    """Detect the edges of an image with the Canny detector; the result is a new image of white edges on
    black. Use it when the user asks for the edges, outlines or canny map of an image, and as the first
    step before canny2image."""
    return _detect(ctx, image, "Canny edge map")


@tool(card="Image2Line")
def image2line(ctx: ToolContext, image: Source) -> str:
    """Detect the straight lines of an image with M-LSD; the result is a new image of white line segments
    on black. Use it for buildings, rooms and other straight-edged scenes when the user asks for their
    lines, and as the first step before line2image."""
    return _detect(ctx, image, "straight-line map")


@tool(card="Image2Hed")
def image2hed(ctx: ToolContext, image: Source) -> str:
    """Detect the soft edges (HED boundaries) of an image; the result is a new image of grey soft edges on
    black. Use it when the user asks for the soft edges or HED map of an image, and as the first step
    before hed2image."""
    return _detect(ctx, image, "HED soft-edge map")


@tool(card="Image2Scribble")
def image2scribble(ctx: ToolContext, image: Source) -> str:
    """Turn an image into a rough scribble (a sketch of its main contours, white strokes on black). Use it
    when the user asks for a sketch or scribble of an image, and as the first step before scribble2image
    when the user gives a photo instead of a drawing."""
    return _detect(ctx, image, "scribble")


@tool(card="Image2Pose")
def image2pose(ctx: ToolContext, image: Source) -> str:
    """Detect the body poses of the people in an image (OpenPose); the result is a new image of coloured
    skeletons on black, all black when nobody is found. Use it when the user asks for the pose or
    skeleton of people in an image, and as the first step before pose2image."""
    return _detect(ctx, image, "pose map (all black if no person was found)")


@tool(card="Image2Seg")
def image2seg(ctx: ToolContext, image: Source) -> str:
    """Segment an image into regions of 150 kinds of things and stuff (ADE20K: sky, wall, person, tree ...)
    coloured by class; the result is a new image. Use it when the user asks for a segmentation map of an
    image, and as the first step before seg2image."""
    return _detect(ctx, image, "segmentation map")


@tool(card="Image2Depth")
def image2depth(ctx: ToolContext, image: Source) -> str:
    """Estimate the depth of an image (MiDaS); the result is a new grey image where near is bright and far
    is dark. Use it when the user asks for the depth map of an image, and as the first step before
    depth2image."""
    return _detect(ctx, image, "depth map")


@tool(card="Image2Normal")
def image2normal(ctx: ToolContext, image: Source) -> str:
    """Estimate the surface normals of an image (from its depth); the result is a new bluish image whose
    colours encode surface directions. Use it when the user asks for the normal map of an image, and as
    the first step before normal2image."""
    return _detect(ctx, image, "normal map")


TOOLS = [image2canny, image2line, image2hed, image2scribble, image2pose, image2seg, image2depth, image2normal]
