"""The HTTP function (API Gateway REST proxy -> Mangum -> FastAPI) and the JWT authorizer, called
in-process with recorded events against the AWS adapters on moto."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest

from accrue.entrypoints.api.security import Role
from accrue.entrypoints.lambdas import authorizer, http
from tests.aws.conftest import Aws, LambdaContext, recorded_event
from tests.conftest import SECRET, auth


def api_event(
    method: str,
    path: str,
    body: Any = None,
    *,
    role: str = "admin",
    sub: str = "admin",
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    event = recorded_event("apigateway_rest_proxy.json")
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["path"] = path
    event["requestContext"]["path"] = f"/prod{path}"
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    extra = {**auth(role, sub), **(headers or {})}
    event["headers"].update(extra)
    event["multiValueHeaders"].update({k: [v] for k, v in extra.items()})
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
    event["body"] = None if body is None else json.dumps(body)
    return event


def call(event: dict[str, Any], context: LambdaContext) -> tuple[int, dict[str, Any]]:
    response = http.handler(event, context)
    return int(response["statusCode"]), json.loads(response["body"])


def test_a_member_is_created_and_read_back_through_api_gateway_events(aws: Aws, context: LambdaContext) -> None:
    status, created = call(api_event("POST", "/users", {"email": "ada@example.com", "name": "Ada"}), context)
    assert status == 201, created
    user_id = created["data"]["userId"]
    assert created["data"]["points"] == 100
    status, read = call(api_event("GET", f"/users/{user_id}"), context)
    assert status == 200
    assert read["data"]["email"] == "ada@example.com" and read["data"]["points"] == 100
    status, again = call(api_event("POST", "/users", {"email": "ADA@example.com", "name": "Other"}), context)
    assert status == 409 and again["success"] is False


def test_an_idempotency_key_replays_the_first_answer_from_dynamodb(aws: Aws, context: LambdaContext) -> None:
    body = {"email": "bob@example.com", "name": "Bob"}
    first = http.handler(api_event("POST", "/users", body, headers={"Idempotency-Key": "k-1"}), context)
    second = http.handler(api_event("POST", "/users", body, headers={"Idempotency-Key": "k-1"}), context)
    assert first["statusCode"] == second["statusCode"] == 201
    assert json.loads(first["body"]) == json.loads(second["body"])
    assert second["headers"].get("idempotent-replayed") == "true"
    other = http.handler(
        api_event("POST", "/users", {**body, "name": "B"}, headers={"Idempotency-Key": "k-1"}), context
    )
    assert other["statusCode"] == 422


def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(aws: Aws, context: LambdaContext) -> None:
    status, body = call(
        api_event(
            "POST", "/transactions", {"memberId": "m-1", "transactionAmount": "-5", "transactionType": "purchase"}
        ),
        context,
    )
    assert status == 400
    assert "transactionAmount" in json.dumps(body["error"])
    scan = aws.clients["dynamodb"].scan(TableName=aws.settings.table_name, Select="COUNT")
    assert scan["Count"] == 0


# -- the authorizer ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def authorizer_secret(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The authorizer reads its own settings (a separate function): give it the suite's secret."""
    monkeypatch.setenv("ACCRUE_JWT_SECRET", SECRET)
    authorizer.secret.cache_clear()
    yield
    authorizer.secret.cache_clear()


def token_event(token: str) -> dict[str, Any]:
    event = recorded_event("apigateway_authorizer_token.json")
    event["authorizationToken"] = token
    return event


def signed(claims: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def test_a_valid_token_is_allowed_for_the_whole_stage_with_its_subject_and_role(
    aws: Aws, context: LambdaContext
) -> None:
    token = signed({"sub": "svc-1", "role": "service", "exp": int(time.time()) + 60})
    result = authorizer.handler(token_event(f"Bearer {token}"), context)
    assert result["principalId"] == "svc-1"
    assert result["context"] == {"sub": "svc-1", "role": "service"}
    statement = result["policyDocument"]["Statement"][0]
    assert statement["Effect"] == "Allow"
    assert statement["Resource"] == "arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/*/*"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        "Bearer "
        + signed({"sub": "a", "role": "admin", "exp": int(time.time()) + 60}, "another-secret-0123456789abcdef"),
        "Bearer " + signed({"sub": "a", "role": "admin", "exp": int(time.time()) - 60}),
        "Bearer " + signed({"sub": "a", "role": "root", "exp": int(time.time()) + 60}),
        "Bearer " + signed({"role": "admin", "exp": int(time.time()) + 60}),
    ],
    ids=["missing", "basic", "garbage", "wrong-secret", "expired", "unknown-role", "no-subject"],
)
def test_a_bad_token_is_unauthorized(aws: Aws, context: LambdaContext, header: str) -> None:
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorizer.handler(token_event(header), context)


def test_the_authorizer_knows_exactly_the_roles_of_the_api() -> None:
    assert {role.value for role in Role} == authorizer.ROLES


def test_the_authorizer_reads_its_secret_from_secrets_manager(
    aws: Aws, context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = aws.clients["secretsmanager"].create_secret(Name="accrue/jwt", SecretString="s" * 40)["ARN"]
    monkeypatch.setenv("ACCRUE_JWT_SECRET_ARN", arn)
    authorizer.secret.cache_clear()
    try:
        token = signed({"sub": "a", "role": "admin", "exp": int(time.time()) + 60}, "s" * 40)
        assert authorizer.handler(token_event(f"Bearer {token}"), context)["principalId"] == "a"
        with pytest.raises(Exception, match=r"^Unauthorized$"):
            authorizer.handler(token_event("Bearer " + signed({"sub": "a", "role": "admin", "exp": 9e9})), context)
    finally:
        authorizer.secret.cache_clear()
