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
        )

    def render(self, template: str, context: Mapping[str, Any]) -> str:
        return self.env.get_template(template).render(**context).strip()
