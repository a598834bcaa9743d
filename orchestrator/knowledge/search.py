"""Tokens for BM25 (jieba for Chinese, words for English) and reciprocal-rank fusion of two rankings."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import cache
from typing import Any

_WORD = re.compile(r"\w", re.UNICODE)
RRF_K = 60  # the constant of Cormack et al. (2009); rankings are fused as sum of 1 / (RRF_K + rank)


@cache
def _jieba() -> Any:
    """One jieba tokenizer per process: its dictionary takes about a second to load, once."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    return tokenizer


def tokens(text: str) -> list[str]:
    """Lower-cased search tokens: jieba's words for Chinese (its search mode also yields the shorter words
    inside long ones), letters-and-digits words for the rest."""
    return [t.lower() for t in _jieba().cut_for_search(text) if _WORD.search(t)]


# Words that say nothing about which passage answers (English and Chinese function words). BM25 gives them
# almost no weight anyway, but each one matches most chunks, and FTS5 must rank every chunk a term matches.
STOP_WORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how i if in
into is it its me my of on or our so than that the their them then there these they this to was we were what
when where which who why will with would you your 的 了 是 在 和 与 及 或 吗 呢 吧 啊 什么 怎么 哪些 哪个 如何 为什么
有 没有 我 你 他 她 它 我们 你们 他们 这 那 这个 那个 一个 关于 对 把 被 从 到 也 都 就 还 说""".split()
)


def match_query(text: str) -> str:
    """An FTS5 query that matches any of the question's tokens but function words (BM25 ranks by how many and
    how rare); a question of function words only keeps them."""
    unique = [t for t in dict.fromkeys(t.replace('"', "") for t in tokens(text)) if t]
    kept = [t for t in unique if t not in STOP_WORDS] or unique
    return " OR ".join(f'"{t}"' for t in kept)


def fuse(
    rankings: Sequence[Sequence[int]], weights: Sequence[float] | None = None
) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: ids ordered by sum of weight / (RRF_K + rank), best first."""
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings)):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (RRF_K + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])
