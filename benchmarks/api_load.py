"""Issue 20: what the API layer adds to a turn, and 20 API clients at once with no errors and no cross-talk.

Tiny weights and the rules brain on this machine's CPU, so a turn is mostly the API's own work: one
``/image2canny`` turn on an uploaded picture, timed through ``Session.chat`` directly and through ``serve`` with
the real ``openai`` client (base64 upload in, Markdown with the image URL out, the PNG fetched). Then ``clients``
clients at once, each uploading its own picture (a black square at its own place): every reply must show an edge
map whose edges are at that client's place, not another's.

    python -m benchmarks.api_load [--turns 20] [--clients 20]
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # served_app: uvicorn in a thread

IMAGE_URL = re.compile(r"\]\((http://[^)]+\.png[^)]*)\)")


def picture(index: int) -> Image.Image:
    """A white 256x256 picture with a black square whose place depends on ``index`` (8 x 8 places)."""
    image = Image.new("RGB", (256, 256), "white")
    x, y = (index % 8) * 28 + 10, (index // 8 % 8) * 28 + 10
    ImageDraw.Draw(image).rectangle((x, y, x + 20, y + 20), fill="black")
    return image


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def edges_at(png: bytes, index: int) -> bool:
    """Whether the edge map's white pixels lie around picture(index)'s square (and nowhere else)."""
    edges = np.asarray(Image.open(io.BytesIO(png)).convert("L").resize((256, 256))) > 128
    ys, xs = np.nonzero(edges)
    if not len(xs):
        return False
    x, y = (index % 8) * 28 + 10, (index // 8 % 8) * 28 + 10
    return bool(abs(xs.mean() - (x + 10)) < 6 and abs(ys.mean() - (y + 10)) < 6)


def main(argv: list[str] | None = None) -> None:
    import openai
    from served_app import served_api

    from orchestrator import Orchestrator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="api-load-"))
    orch = Orchestrator("Image2Canny_cpu", weights="tiny", brain="rules", session_root=root)
    direct = []
    for i in range(args.turns):
        session = orch.new_session()
        start = time.perf_counter()
        session.chat("/image2canny", images=[picture(i)])
        direct.append(time.perf_counter() - start)
    with served_api(orch, max_turns_in_flight=args.clients) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=120)

        def turn(index: int) -> tuple[float, bool]:
            start = time.perf_counter()
            answer = client.chat.completions.create(model="visual-orchestrator", messages=[{"role": "user", "content": [
                {"type": "text", "text": "/image2canny"},
                {"type": "image_url", "image_url": {"url": data_url(picture(index))}}]}])  # fmt: skip
            [found] = IMAGE_URL.findall(answer.choices[0].message.content)
            png = httpx.get(found, timeout=30).content
            return time.perf_counter() - start, edges_at(png, index)

        through_api = [turn(i)[0] for i in range(args.turns)]
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(turn, range(args.clients)))
        wall = time.perf_counter() - start
    own = sum(ok for _, ok in results)
    rows = [
        ("Session.chat, one turn", f"{statistics.median(direct) * 1000:.0f} ms", "-"),
        ("API (openai client, upload, image fetched), one turn", f"{statistics.median(through_api) * 1000:.0f} ms",
         f"+{(statistics.median(through_api) - statistics.median(direct)) * 1000:.0f} ms"),
        (f"{args.clients} API clients at once", f"{wall:.2f} s wall", f"{own}/{args.clients} saw their own edges, "
         f"0 errors"),
    ]  # fmt: skip
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in [("what", "median", "note"), *rows]:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, width)))
    if own != args.clients:
        raise SystemExit(
            f"cross-talk or a failed turn: {args.clients - own} clients did not see their own edges"
        )


if __name__ == "__main__":
    main()
