"""The REST API is derived from docs/openapi.json: every documented operation, nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from accrue_infra.api import OpenApiError, gateway_schema, load_openapi, operations
from accrue_infra.settings import OPENAPI_DOCUMENT
from tests.infra.conftest import of_type

pytestmark = pytest.mark.infra


def document(paths: dict[str, Any], schemas: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"openapi": "3.1.0", "paths": paths, "components": {"schemas": schemas or {}}}


def test_secured_operations_and_json_bodies_are_recognised() -> None:
    doc = document(
        {
            "/health": {"get": {"operationId": "health"}},
            "/users": {
                "post": {
                    "operationId": "create_user",
                    "security": [{"HTTPBearer": []}],
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/New"}}}},
                },
            },
            "/orders": {
                "get": {
                    "operationId": "list_orders",
                    "security": [{"HTTPBearer": []}],
                    "parameters": [
                        {"name": "userId", "in": "query", "required": True},
                        {"name": "cursor", "in": "query"},
                    ],
                }
            },
        },
        {"New": {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}},
    )

    found = {(op.method, op.path): op for op in operations(doc)}

    assert found["GET", "/health"].secured is False
    assert found["POST", "/users"].secured is True
    assert found["POST", "/users"].body_model_name == "New"
    assert found["POST", "/users"].body_schema == {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "title": "New",
        "type": "object",
        "properties": {"email": {"type": "string"}},
        "required": ["email"],
    }
    assert found["GET", "/orders"].required_query == ("userId",)


def test_schemas_become_draft_4_and_never_stricter_than_the_application() -> None:
    components = {
        "Money": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": "^\\d+$"}]}
    }
    schema = {
        "type": "object",
        "title": "Payment",
        "additionalProperties": False,
        "properties": {
            "amount": {"$ref": "#/components/schemas/Money"},
            "currency": {"const": "USD", "format": "iso4217", "description": "ISO code"},
            "kind": {"oneOf": [{"type": "string"}, {"type": "null"}]},
        },
    }

    converted = gateway_schema(schema, components)

    assert converted == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "amount": {"anyOf": [{"type": "number", "minimum": 0, "exclusiveMinimum": True}, {"type": "string"}]},
            "currency": {"enum": ["USD"]},
            "kind": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    }


def test_camel_case_properties_are_also_accepted_in_snake_case_as_the_application_does() -> None:
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"userId": {"type": "string"}, "email": {"type": "string"}},
        "required": ["userId", "email"],
    }

    converted = gateway_schema(schema, {})

    assert converted == {
        "type": "object",
        "additionalProperties": False,
        "properties": {"userId": {"type": "string"}, "email": {"type": "string"}, "user_id": {"type": "string"}},
        "required": ["email"],
        "allOf": [{"anyOf": [{"required": ["userId"]}, {"required": ["user_id"]}]}],
    }


def test_a_recursive_schema_stops_validating_below_the_recursion() -> None:
    components = {"Node": {"type": "object", "properties": {"child": {"$ref": "#/components/schemas/Node"}}}}

    converted = gateway_schema({"$ref": "#/components/schemas/Node"}, components)

    assert converted == {"type": "object", "properties": {"child": {}}}


def test_two_parameter_names_at_one_level_are_refused_with_the_fix() -> None:
    doc = document({"/users/{id}": {"get": {}}, "/users/{userId}/orders": {"get": {}}})

    with pytest.raises(OpenApiError) as raised:
        operations(doc)

    assert "/users has path parameters ['{id}', '{userId}']" in str(raised.value)


def test_every_operation_of_the_committed_document_is_a_gateway_method(resources: dict[str, dict[str, Any]]) -> None:
    documented = operations(load_openapi(OPENAPI_DOCUMENT))
    methods = of_type(resources, "AWS::ApiGateway::Method").values()
    deployed = {m["Properties"]["OperationName"]: m["Properties"] for m in methods}

    assert len(deployed) == len(documented)
    for operation in documented:
        method = deployed[operation.operation_id]
        assert method["HttpMethod"] == operation.method
        assert method["AuthorizationType"] == ("CUSTOM" if operation.secured else "NONE")
        assert bool(method.get("RequestModels")) == (operation.body_schema is not None)


def test_only_health_and_webhook_receivers_are_public(resources: dict[str, dict[str, Any]]) -> None:
    public = [op.path for op in operations(load_openapi(OPENAPI_DOCUMENT)) if not op.secured]

    assert "/health" in public
    assert all(path == "/health" or path.startswith("/webhooks/") for path in public), public
