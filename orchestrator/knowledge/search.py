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


def match_query(text: str) -> str:
    """An FTS5 query that matches any of the question's tokens (BM25 ranks by how many and how rare)."""
    unique = dict.fromkeys(t.replace('"', "") for t in tokens(text))
    return " OR ".join(f'"{t}"' for t in unique if t)


def fuse(
    rankings: Sequence[Sequence[int]], weights: Sequence[float] | None = None
) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: ids ordered by sum of weight / (RRF_K + rank), best first."""
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings)):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (RRF_K + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])
