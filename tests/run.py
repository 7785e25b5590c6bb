"""What a run of the lkbuild program gave: for tests and benchmarks alike (no pytest here)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def json(self) -> Any:
        return json.loads(self.out)
