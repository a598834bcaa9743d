"""The web family's client code: which addresses may be reached, a guarded fetch, search backends, page text.

Nothing here knows of chat or sessions; ``foundation_models/web.py`` builds a configured client from a card's
options and the orchestrator's tools (``orchestrator/toolbox/web.py``) call it. Every failure a person or a
model can act on is a :class:`WebError` whose message is one sentence.
"""

from __future__ import annotations


class WebError(Exception):
    """A request that was refused or failed; the message is one sentence that says why."""
