"""A replica for the fault test: it dies (``os._exit``, as an OOM kill or a GPU fault would) in the middle of
the first call whose prompt asks for it, once per marker file. Imported by the Ray workers (PYTHONPATH)."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.cluster.replica import ToolReplica


class CrashingReplica(ToolReplica):
    def call(self, tool, args, inputs):
        prompt = str(args.get("prompt", ""))
        for item in super().call(tool, args, inputs):
            yield item
            if "progress" in item and prompt.startswith("crash:"):
                marker = Path(prompt.removeprefix("crash:").split()[0])
                if not marker.exists():
                    marker.write_text(self.where)
                    os._exit(1)
