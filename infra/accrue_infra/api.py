"""The REST API, derived from the committed OpenAPI document (``docs/openapi.json``).

Every documented operation becomes an API Gateway method proxied to the HTTP function, so the
gateway exposes exactly the application's contract: undocumented paths never reach a function.
Operations with a security requirement need the Lambda authorizer (JWT) and an API key (usage
plan: 10 000 requests/day); the others (health, signed webhooks) are public. JSON request bodies
are validated against models converted from the same document (draft 4, lenient on formats and
patterns, which the application checks precisely), and gateway-generated errors use the
application's error envelope.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from accrue_infra import acknowledgements as ack
from accrue_infra.settings import DeploymentSettings

# Seed 000/001/004: 50 requests/s with bursts of 100, and 10 000 requests a day per API key.
THROTTLE_RATE_PER_SECOND = 50
THROTTLE_BURST = 100
DAILY_QUOTA = 10_000

_METHODS = ("get", "put", "post", "delete", "patch")
_DROPPED_KEYWORDS = {"format", "pattern", "title", "description", "default", "examples", "example", "discriminator"}


class OpenApiError(ValueError):
    """The document cannot be mapped onto API Gateway resources."""


@dataclass(frozen=True)
class Operation:
    method: str  # upper case
    path: str  # /points/{userId}/history
    operation_id: str
    secured: bool
    body_model_name: str | None = None
    body_schema: dict[str, Any] | None = None
    required_query: tuple[str, ...] = ()
    required_headers: tuple[str, ...] = ()


@dataclass
class _Models:
    components: dict[str, Any]
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_openapi(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def operations(document: dict[str, Any]) -> list[Operation]:
    """The gateway methods for ``document``, in a stable order."""
    default_security = document.get("security") or []
    components = document.get("components", {}).get("schemas", {})
    found: list[Operation] = []
    for path in sorted(document.get("paths", {})):
        item = document["paths"][path]
        shared_parameters = item.get("parameters", [])
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            security = operation.get("security", default_security)
            parameters = [*shared_parameters, *operation.get("parameters", [])]
            model_name, schema = _body(operation, method, path, components)
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    operation_id=operation.get("operationId") or f"{method}_{path}",
                    secured=bool(security),
                    body_model_name=model_name,
                    body_schema=schema,
                    required_query=tuple(p["name"] for p in parameters if p.get("in") == "query" and p.get("required")),
                    required_headers=tuple(
                        p["name"] for p in parameters if p.get("in") == "header" and p.get("required")
                    ),
                )
            )
    _check_path_parameters(found)
    return found


def gateway_schema(schema: dict[str, Any], components: dict[str, Any], _seen: frozenset[str] = frozenset()) -> Any:
    """A JSON Schema draft 4 equivalent of an OpenAPI 3.1 schema, as API Gateway models require.

    ``$ref`` is inlined (API Gateway references are full model URLs), ``const`` becomes ``enum``,
    numeric ``exclusiveMinimum``/``exclusiveMaximum`` become draft 4's boolean form, ``oneOf``
    becomes ``anyOf``, camelCase properties are also accepted in snake_case, and formats and
    patterns are dropped: never stricter than the application, which validates those with its own
    rules and messages.
    """
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in _seen:  # recursive schema: accept anything below this point
            return {}
        return gateway_schema(components[name], components, _seen | {name})
    converted: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYWORDS or key.startswith("x-") or key == "$defs":
            continue
        if key == "const":
            converted["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            converted["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            converted[key] = True
        elif key in ("anyOf", "oneOf", "allOf"):
            converted["allOf" if key == "allOf" else "anyOf"] = [gateway_schema(s, components, _seen) for s in value]
        elif key == "properties":
            converted[key] = {name: gateway_schema(s, components, _seen) for name, s in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            converted[key] = gateway_schema(value, components, _seen)
        else:
            converted[key] = value
    if "properties" in converted:
        _accept_snake_case(converted)
    return converted


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _accept_snake_case(schema: dict[str, Any]) -> None:
    """The application reads camelCase or snake_case (``ApiModel``); so does the gateway's model.

    Each camelCase property also exists under its snake_case name, and a required property is
    satisfied by either spelling (draft 4: ``anyOf`` of two ``required``).
    """
    properties: dict[str, Any] = schema["properties"]
    aliases = {name: _snake(name) for name in list(properties) if _snake(name) != name}
    for name, snake in aliases.items():
        properties.setdefault(snake, properties[name])
    required = schema.pop("required", None)
    if not required:
        return
    plain = [name for name in required if name not in aliases]
    either = [{"anyOf": [{"required": [name]}, {"required": [aliases[name]]}]} for name in required if name in aliases]
    if plain:
        schema["required"] = plain
    if either:
        schema["allOf"] = [*schema.get("allOf", []), *either]


def _body(
    operation: dict[str, Any], method: str, path: str, components: dict[str, Any]
) -> tuple[str | None, dict[str, Any] | None]:
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if not schema:
        return None, None
    reference = schema.get("$ref", "")
    base = reference.rsplit("/", 1)[-1] if reference else (operation.get("operationId") or f"{method}{path}") + "Body"
    name = re.sub(r"[^A-Za-z0-9]", "", base)
    converted = gateway_schema(schema, components)
    converted = {"$schema": "http://json-schema.org/draft-04/schema#", "title": name, **converted}
    return name, converted


def _check_path_parameters(found: list[Operation]) -> None:
    """API Gateway refuses two different parameter names at one level (/users/{id} and /users/{userId})."""
    children: dict[str, set[str]] = {}
    for operation in found:
        parent = ""
        for segment in operation.path.strip("/").split("/"):
            if segment.startswith("{"):
                children.setdefault(parent, set()).add(segment)
            parent = f"{parent}/{segment}"
    for parent, names in children.items():
        if len(names) > 1:
            raise OpenApiError(
                f"{parent or '/'} has path parameters {sorted(names)}: API Gateway needs one name per level; "
                "rename them in the routers"
            )


def _gateway_error(code: str, message: str) -> dict[str, str]:
    envelope = f'{{"success": false, "error": {{"code": "{code}", "message": {message}, '
    return {"application/json": envelope + '"details": {"requestId": "$context.requestId"}}}'}


# Responses API Gateway produces itself (before the function runs), in the application's envelope.
GATEWAY_RESPONSES: dict[str, tuple[str | None, str, str]] = {
    # response type: (status or None to keep, error code, message expression)
    "BAD_REQUEST_BODY": ("400", "VALIDATION_ERROR", '"$context.error.validationErrorString"'),
    "BAD_REQUEST_PARAMETERS": ("400", "VALIDATION_ERROR", '"$context.error.validationErrorString"'),
    "UNAUTHORIZED": ("401", "UNAUTHORIZED", '"Missing or invalid bearer token"'),
    "ACCESS_DENIED": ("403", "FORBIDDEN", "$context.error.messageString"),
    "INVALID_API_KEY": ("403", "FORBIDDEN", '"Missing or invalid API key (x-api-key header)"'),
    "MISSING_AUTHENTICATION_TOKEN": ("404", "NOT_FOUND", '"No such route"'),
    "REQUEST_TOO_LARGE": ("413", "PAYLOAD_TOO_LARGE", "$context.error.messageString"),
    "UNSUPPORTED_MEDIA_TYPE": ("415", "UNSUPPORTED_MEDIA_TYPE", "$context.error.messageString"),
    "THROTTLED": ("429", "RATE_LIMIT_EXCEEDED", '"Too many requests: slow down"'),
    "QUOTA_EXCEEDED": ("429", "RATE_LIMIT_EXCEEDED", '"Daily request quota of this API key exhausted"'),
    "DEFAULT_4XX": (None, "BAD_REQUEST", "$context.error.messageString"),
    "DEFAULT_5XX": (None, "INTERNAL_ERROR", "$context.error.messageString"),
}


class RestApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: DeploymentSettings,
        document: dict[str, Any],
        handler: lambda_.IFunction,
        authorizer_function: lambda_.IFunction,
        key: kms.IKey,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        self.operations = operations(document)
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            log_group_name=f"/aws/apigateway/{settings.name('api')}/access",
            retention=log_retention,
            encryption_key=key,
            removal_policy=RemovalPolicy.DESTROY if settings.destroyable else RemovalPolicy.RETAIN,
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=settings.name("api"),
            description="accrue HTTP API (generated from docs/openapi.json)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            api_key_source_type=apigw.ApiKeySourceType.HEADER,
            binary_media_types=["multipart/form-data", "application/octet-stream"],
            fail_on_warnings=True,
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name=settings.env_suffix,
                throttling_rate_limit=THROTTLE_RATE_PER_SECOND,
                throttling_burst_limit=THROTTLE_BURST,
                metrics_enabled=True,
                tracing_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                # Request bodies carry personal data and tokens: never in execution logs.
                data_trace_enabled=False,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=False,
                ),
            ),
        )
        cloud_watch_role = self.api.node.try_find_child("CloudWatchRole")
        if cloud_watch_role is not None:
            ack.acknowledge(
                cloud_watch_role,
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]",
                "apigw-cloudwatch-role",
            )
        ack.acknowledge(self.api.deployment_stage, "AwsSolutions-APIG3", "waf")

        self.validator = self.api.add_request_validator(
            "Validator",
            request_validator_name=settings.name("api-validator"),
            validate_request_body=True,
            validate_request_parameters=True,
        )
        self.authorizer = apigw.TokenAuthorizer(
            self,
            "Authorizer",
            authorizer_name=settings.name("jwt"),
            handler=authorizer_function,
            identity_source=apigw.IdentitySource.header("Authorization"),
            validation_regex=r"^Bearer [-0-9A-Za-z._~+/]+=*$",
            # Cached per token: the authorizer must answer with a policy for the whole API.
            results_cache_ttl=Duration.minutes(5),
        )
        # One permission for the whole API instead of one per method (stack resource limit).
        integration = apigw.LambdaIntegration(handler, proxy=True, scope_permission_to_method=False)
        models: dict[str, apigw.Model] = {}
        for operation in self.operations:
            resource = self.api.root.resource_for_path(operation.path)
            request_models = None
            if operation.body_schema is not None and operation.body_model_name is not None:
                model = models.get(operation.body_model_name)
                if model is None:
                    model = self.api.add_model(
                        f"Model{operation.body_model_name}",
                        model_name=operation.body_model_name,
                        content_type="application/json",
                        schema=apigw.JsonSchema(),
                    )
                    # The converted schema goes in verbatim: apigw.JsonSchema renames keywords.
                    cfn_model = model.node.default_child
                    assert isinstance(cfn_model, apigw.CfnModel)
                    cfn_model.add_property_override("Schema", operation.body_schema)
                    models[operation.body_model_name] = model
                request_models = {"application/json": model}
            parameters = {f"method.request.querystring.{name}": True for name in operation.required_query}
            parameters |= {f"method.request.header.{name}": True for name in operation.required_headers}
            method = resource.add_method(
                operation.method,
                integration,
                operation_name=operation.operation_id,
                authorizer=self.authorizer if operation.secured else None,
                authorization_type=apigw.AuthorizationType.CUSTOM
                if operation.secured
                else apigw.AuthorizationType.NONE,
                api_key_required=operation.secured,
                request_validator=self.validator,
                request_models=request_models,
                request_parameters=parameters or None,
            )
            if operation.secured:
                ack.acknowledge(method, "AwsSolutions-COG4", "cognito")
            else:
                ack.acknowledge(method, "AwsSolutions-APIG4", "public-method")
                ack.acknowledge(method, "AwsSolutions-COG4", "public-method")

        for response_type, (status, code, message) in GATEWAY_RESPONSES.items():
            self.api.add_gateway_response(
                f"Response{response_type}",
                type=apigw.ResponseType.of(response_type),
                status_code=status,
                templates=_gateway_error(code, message),
            )

        self.usage_plan = self.api.add_usage_plan(
            "UsagePlan",
            name=settings.name("usage-plan"),
            description="Default clients: 50 req/s, burst 100, 10 000 requests a day",
            throttle=apigw.ThrottleSettings(rate_limit=THROTTLE_RATE_PER_SECOND, burst_limit=THROTTLE_BURST),
            quota=apigw.QuotaSettings(limit=DAILY_QUOTA, period=apigw.Period.DAY),
        )
        self.usage_plan.add_api_stage(stage=self.api.deployment_stage)
        # The key's value is generated by API Gateway (read it with `aws apigateway get-api-key
        # --include-value`); it never appears in the template or the repository.
        self.api_key = apigw.ApiKey(
            self,
            "DefaultKey",
            api_key_name=settings.name("default-client"),
            description="Default client key of the usage plan",
            enabled=True,
        )
        self.usage_plan.add_api_key(self.api_key)

    @property
    def url(self) -> str:
        return self.api.url
