"""Jinja2 rendering of the notification templates shipped in ``accrue/templates``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


class JinjaRenderer:
    def __init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("accrue", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=StrictUndefined,
            keep_trailing_newline=False,
            trim_blocks=False,
            # The templates ship inside the package and never change under a running process:
            # without this, every render stats the template file to see whether to reload it.
            auto_reload=False,
        )

    def render(self, template: str, context: Mapping[str, Any]) -> str:
        return self.env.get_template(template).render(**context).strip()
