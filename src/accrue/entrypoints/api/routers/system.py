"""Health and operator endpoints (dead letters)."""

from __future__ import annotations

import dataclasses
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

from fastapi import Depends, Path, Query

from accrue.bootstrap import Application
from accrue.domain.errors import NotFound
from accrue.entrypoints.api import schemas
from accrue.entrypoints.api.routing import application, router
from accrue.entrypoints.api.schemas import Envelope, ok
from accrue.entrypoints.api.security import Admin
from accrue.service_layer import dead_letters

api = router()
App = Annotated[Application, Depends(application)]

try:
    VERSION = version("accrue")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    VERSION = "0.0.0"


@api.get("/health", response_model=Envelope[schemas.Health], tags=["system"])
async def health() -> dict[str, object]:
    return ok(schemas.Health(status="ok", version=VERSION))


@api.get("/admin/dead-letters", response_model=Envelope[schemas.DeadLetterPage], tags=["admin"])
def list_dead_letters(
    app: App, principal: Admin, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> dict[str, object]:
    items = dead_letters.list_all(app, limit)
    return ok(schemas.DeadLetterPage(dead_letters=[schemas.DeadLetter(**dataclasses.asdict(i)) for i in items]))


@api.post("/admin/dead-letters/{id}/redrive", response_model=Envelope[schemas.Redriven], tags=["admin"])
def redrive_dead_letter(
    app: App, principal: Admin, dead_letter_id: Annotated[str, Path(alias="id", max_length=64)]
) -> dict[str, object]:
    if not dead_letters.redrive(app, dead_letter_id):
        raise NotFound(f"dead letter {dead_letter_id} not found")
    return ok(schemas.Redriven(id=dead_letter_id, redriven=True))
