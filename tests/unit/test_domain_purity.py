"""The domain imports only the standard library and itself (import-linter checks it too)."""

import ast
import sys
from pathlib import Path

import accrue.domain

DOMAIN = Path(accrue.domain.__file__).parent


def test_domain_modules_import_only_the_standard_library_and_the_domain() -> None:
    offenders = []
    for path in DOMAIN.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or name.startswith("accrue.domain") or top == "__future__":
                    continue
                offenders.append(f"{path.name}: {name}")
    assert offenders == []
