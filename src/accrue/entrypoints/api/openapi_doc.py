"""Write or check the committed OpenAPI document (docs/openapi.json) against the app."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from accrue.bootstrap import bootstrap
from accrue.config import Settings
from accrue.entrypoints.api.app import create_app


def current_document() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        application = bootstrap(Settings(db=Path(tmp) / "openapi.db", blob_dir=Path(tmp) / "blobs"))
        try:
            schema = create_app(application).openapi()
        finally:
            application.close()
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"write", "check"}:
        print("usage: python -m accrue.entrypoints.api.openapi_doc write|check PATH", file=sys.stderr)
        return 2
    action, path = argv[0], Path(argv[1])
    document = current_document()
    if action == "write":
        path.write_text(document, encoding="utf-8")
        return 0
    if not path.exists() or path.read_text(encoding="utf-8") != document:
        print(f"{path} is out of date: run `make openapi` and commit it", file=sys.stderr)
        return 1
    print(f"{path} is current")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
