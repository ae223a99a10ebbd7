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
        # Jinja's own globals (range, dict, ...), merged into each context once here: Template.render
        # merges them from a ChainMap per call, which was half of the cost of these small templates.
        self._globals = dict(self.env.globals)

    def render(self, template: str, context: Mapping[str, Any]) -> str:
        """What ``Template.render(**context)`` gives (stripped), with the same errors."""
        found = self.env.get_template(template)
        try:
            variables = found.new_context({**self._globals, **context}, shared=True)
            return self.env.concat(found.root_render_func(variables)).strip()
        except Exception:  # noqa: BLE001 - re-raised by Jinja, with the template's own lines in the traceback
            self.env.handle_exception()
