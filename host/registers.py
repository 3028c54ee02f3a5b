"""The generated ``register_map.json`` as the driver and its devices read it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class RegisterMap:
    """The generated ``register_map.json``: argument name → offsets."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = dict(data)
        self.args = {a["name"]: a for a in data["args"]}
        self.top = data["top"]

    @classmethod
    def load(cls, path: str | Path) -> RegisterMap:
        return cls(json.loads(Path(path).read_text()))

    def offset(self, name: str) -> int:
        return self.args[name]["offset"]

    def pointers(self) -> list[str]:
        return [n for n, a in self.args.items() if a["kind"] == "pointer"]

    def flags(self, name: str) -> dict[str, int]:
        """The bits of output register ``name`` (``status``): flag name → bit number (empty if it has none)."""
        return {flag: f["bit"] for flag, f in self.args[name].get("flags", {}).items()}
