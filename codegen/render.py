"""The jinja2 environment every generator renders its templates with (HLS, RTL, Vivado)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2


def template_env(directory: Path, trim: bool = True, **filters: Callable[..., Any]) -> jinja2.Environment:
    """A strict environment over ``directory``: undefined names are errors, trailing newlines are kept;
    ``trim`` strips block tags' own lines (as C++ and SystemVerilog templates want)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=trim,
        lstrip_blocks=trim,
    )
    env.filters.update(filters)
    return env
