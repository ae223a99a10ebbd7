"""Acceptance 2: what the synthesized template must contain (SPEC section 7), asserted on the template."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from jsonschema import Draft4Validator

from accrue.adapters.aws import table as table_design
from accrue.domain.payment_workflow import PAYMENT_WORKFLOW
from accrue.domain.schedules import SCHEDULES
from accrue_infra.messaging import DEAD_LETTER_RETENTION, MAX_RECEIVE_COUNT
from accrue_infra.settings import SOURCE_LAMBDA_DIR as SOURCE
from accrue_infra.stack import HANDLERS
from accrue_infra.workflow_asl import render_asl
from tests.infra.conftest import ENV_SUFFIX, of_type

pytestmark = pytest.mark.infra

Resources = dict[str, dict[str, Any]]

CONTRACT_HANDLERS = {
    f"{HANDLERS}.http.handler",
    f"{HANDLERS}.authorizer.handler",
    f"{HANDLERS}.stream.handler",
    f"{HANDLERS}.payments_worker.handler",
    f"{HANDLERS}.notifications_worker.handler",
    f"{HANDLERS}.batch_files.handler",
    f"{HANDLERS}.schedules.payout_handler",
    f"{HANDLERS}.schedules.tier_review_handler",
    f"{HANDLERS}.workflow_steps.handler",
}
# Told to the API function only (it serves /webhooks/*), not part of every function's contract.
WEBHOOK_SECRETS = "ACCRUE_WEBHOOK_SECRETS_ARN"
CONTRACT_ENVIRONMENT = {
    "ACCRUE_BACKEND",
    "ACCRUE_ENV",
    "ACCRUE_TABLE_NAME",
    "ACCRUE_PAYMENTS_QUEUE_URL",
    "ACCRUE_NOTIFICATIONS_QUEUE_URL",
    "ACCRUE_REPORTS_BUCKET",
    "ACCRUE_UPLOADS_BUCKET",
    "ACCRUE_ARCHIVE_BUCKET",
    "ACCRUE_NOTIFICATIONS_TOPIC_ARN",
    "ACCRUE_EVENT_BUS_NAME",
    "ACCRUE_PAYMENT_STATE_MACHINE_ARN",
    "ACCRUE_JWT_SECRET_ARN",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
}


@pytest.fixture(scope="module")
def assertions(template: dict[str, Any]) -> Template:
    return Template.from_json(template)


def ref_id(value: Any) -> str | None:
    """The logical id a Ref / Fn::GetAtt points at."""
    if isinstance(value, dict):
        if "Ref" in value:
            return str(value["Ref"])
        if "Fn::GetAtt" in value:
            return str(value["Fn::GetAtt"][0])
    return None


# -- DynamoDB -------------------------------------------------------------------------------------


def test_every_table_has_pitr_customer_managed_encryption_and_a_stream(resources: Resources) -> None:
    tables = of_type(resources, "AWS::DynamoDB::Table")

    assert len(tables) == 1, "one single table"
    for table in tables.values():
        props = table["Properties"]
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["SSESpecification"]["SSEType"] == "KMS"
        assert ref_id(props["SSESpecification"]["KMSMasterKeyId"]) in of_type(resources, "AWS::KMS::Key")
        assert props["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"


def test_the_single_table_matches_the_adapters_table_design(assertions: Template) -> None:
    assertions.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "TableName": f"accrue-data-{ENV_SUFFIX}",
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [
                {"AttributeName": table_design.PARTITION_KEY, "KeyType": "HASH"},
                {"AttributeName": table_design.SORT_KEY, "KeyType": "RANGE"},
            ],
            "TimeToLiveSpecification": {"AttributeName": table_design.TTL_ATTRIBUTE, "Enabled": True},
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": index.name,
                    "KeySchema": [
                        {"AttributeName": index.partition_key, "KeyType": "HASH"},
                        {"AttributeName": index.sort_key, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
                for index in table_design.GLOBAL_INDEXES
            ],
            "DeletionProtectionEnabled": True,
        },
    )
    assertions.has_resource("AWS::DynamoDB::Table", {"DeletionPolicy": "Retain"})


def test_the_stream_reaches_the_stream_function_filtered_to_outbox_items_with_a_failure_queue(
    resources: Resources,
) -> None:
    (table_id,) = of_type(resources, "AWS::DynamoDB::Table")
    (mapping,) = [
        m["Properties"]
        for m in of_type(resources, "AWS::Lambda::EventSourceMapping").values()
        if ref_id(m["Properties"]["EventSourceArn"]) == table_id
    ]
    function = resources[ref_id(mapping["FunctionName"]) or ""]

    assert function["Properties"]["Handler"] == f"{HANDLERS}.stream.handler"
    assert json.loads(mapping["FilterCriteria"]["Filters"][0]["Pattern"]) == table_design.STREAM_FILTER_PATTERN
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["MaximumRetryAttempts"] == 3
    failure_queue = ref_id(mapping["DestinationConfig"]["OnFailure"]["Destination"])
    assert resources[failure_queue or ""]["Type"] == "AWS::SQS::Queue"


# -- SQS ------------------------------------------------------------------------------------------


def dead_letter_queue_ids(resources: Resources) -> set[str]:
    """Queues that receive what failed elsewhere: redrive targets and failure destinations."""
    targets: set[str | None] = set()
    for queue in of_type(resources, "AWS::SQS::Queue").values():
        policy = queue["Properties"].get("RedrivePolicy")
        if policy:
            targets.add(ref_id(policy["deadLetterTargetArn"]))
    for mapping in of_type(resources, "AWS::Lambda::EventSourceMapping").values():
        destination = mapping["Properties"].get("DestinationConfig", {}).get("OnFailure", {})
        targets.add(ref_id(destination.get("Destination")))
    for function in of_type(resources, "AWS::Lambda::Function").values():
        targets.add(ref_id(function["Properties"].get("DeadLetterConfig", {}).get("TargetArn")))
    for schedule in of_type(resources, "AWS::Scheduler::Schedule").values():
        targets.add(ref_id(schedule["Properties"]["Target"].get("DeadLetterConfig", {}).get("Arn")))
    return {t for t in targets if t is not None}


def test_every_queue_has_a_dead_letter_queue_after_three_receives_unless_it_is_one(resources: Resources) -> None:
    queues = of_type(resources, "AWS::SQS::Queue")
    dead_letters = dead_letter_queue_ids(resources)
    work_queues = {lid: q for lid, q in queues.items() if lid not in dead_letters}

    assert dead_letters <= set(queues)
    assert len(work_queues) >= 2, "payments and notifications"
    for logical_id, queue in work_queues.items():
        policy = queue["Properties"].get("RedrivePolicy")
        assert policy is not None, f"{logical_id} has no dead-letter queue"
        assert policy["maxReceiveCount"] == MAX_RECEIVE_COUNT == 3
        assert ref_id(policy["deadLetterTargetArn"]) in dead_letters


def test_dead_letter_queues_keep_messages_fourteen_days_and_every_queue_is_encrypted(resources: Resources) -> None:
    queues = of_type(resources, "AWS::SQS::Queue")
    for logical_id in dead_letter_queue_ids(resources):
        assert queues[logical_id]["Properties"]["MessageRetentionPeriod"] == DEAD_LETTER_RETENTION.to_seconds()
        assert DEAD_LETTER_RETENTION.to_seconds() == 14 * 24 * 3600
    for logical_id, queue in queues.items():
        assert ref_id(queue["Properties"].get("KmsMasterKeyId")) in of_type(resources, "AWS::KMS::Key"), logical_id


def test_every_queue_and_topic_refuses_requests_without_tls(resources: Resources) -> None:
    for policy_type, target_key, target_type in (
        ("AWS::SQS::QueuePolicy", "Queues", "AWS::SQS::Queue"),
        ("AWS::SNS::TopicPolicy", "Topics", "AWS::SNS::Topic"),
    ):
        guarded = set()
        for policy in of_type(resources, policy_type).values():
            statements = policy["Properties"]["PolicyDocument"]["Statement"]
            if any(
                s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
                for s in statements
            ):
                guarded |= {ref_id(t) for t in policy["Properties"][target_key]}
        assert guarded >= set(of_type(resources, target_type)), policy_type


# -- S3 -------------------------------------------------------------------------------------------


def test_every_bucket_blocks_public_access_is_encrypted_versioned_and_tls_only(resources: Resources) -> None:
    buckets = of_type(resources, "AWS::S3::Bucket")
    tls_only = set()
    for policy in of_type(resources, "AWS::S3::BucketPolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if (
                statement["Effect"] == "Deny"
                and statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
            ):
                tls_only.add(ref_id(policy["Properties"]["Bucket"]))

    assert len(buckets) == 4, "reports, uploads, webhook archive, access logs"
    for logical_id, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, logical_id
        (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("aws:kms", "AES256"), logical_id
        assert props["VersioningConfiguration"]["Status"] == "Enabled", logical_id
        assert logical_id in tls_only, logical_id


def test_data_buckets_use_the_customer_managed_key_and_log_access_to_the_log_bucket(resources: Resources) -> None:
    buckets = of_type(resources, "AWS::S3::Bucket")
    (log_bucket,) = [lid for lid, b in buckets.items() if "LoggingConfiguration" not in b["Properties"]]
    for logical_id, bucket in buckets.items():
        if logical_id == log_bucket:
            continue
        props = bucket["Properties"]
        (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        assert ref_id(props["LoggingConfiguration"]["DestinationBucketName"]) == log_bucket


def test_payout_reports_move_to_glacier_after_ninety_days(assertions: Template) -> None:
    assertions.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": {"Fn::Join": ["", Match.array_with([f"accrue-reports-{ENV_SUFFIX}-"])]},
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Status": "Enabled",
                                "Transitions": [{"StorageClass": "GLACIER", "TransitionInDays": 90}],
                            }
                        )
                    ]
                )
            },
        },
    )


def test_csv_files_created_in_the_uploads_bucket_invoke_the_batch_function(resources: Resources) -> None:
    notified = [
        (lid, c)
        for lid, b in of_type(resources, "AWS::S3::Bucket").items()
        for c in b["Properties"].get("NotificationConfiguration", {}).get("LambdaConfigurations", [])
    ]

    (bucket_id, configuration), *others = notified
    assert others == []
    assert configuration["Event"] == "s3:ObjectCreated:*"
    assert configuration["Filter"]["S3Key"]["Rules"] == [{"Name": "suffix", "Value": ".csv"}]
    function = resources[ref_id(configuration["Function"]) or ""]
    assert function["Properties"]["Handler"] == f"{HANDLERS}.batch_files.handler"
    # S3 validates the destination when it saves the notification: the permission comes first.
    permission_ids = set(of_type(resources, "AWS::Lambda::Permission"))
    assert permission_ids & set(resources[bucket_id].get("DependsOn", []))


# -- Lambda ---------------------------------------------------------------------------------------


def test_every_function_is_python_312_arm64_traced_with_the_contract_handlers(resources: Resources) -> None:
    functions = of_type(resources, "AWS::Lambda::Function")

    assert {f["Properties"]["Handler"] for f in functions.values()} == CONTRACT_HANDLERS
    for logical_id, function in functions.items():
        props = function["Properties"]
        assert props["Runtime"] == "python3.12", logical_id
        assert props["Architectures"] == ["arm64"], logical_id
        assert props["TracingConfig"] == {"Mode": "Active"}, logical_id
        variables = props["Environment"]["Variables"]
        assert set(variables) >= CONTRACT_ENVIRONMENT, logical_id
        assert variables["ACCRUE_BACKEND"] == "aws"
        assert variables["ACCRUE_ENV"] == "production"
        # The package directory is read-only in Lambda, and no function runs background workers.
        assert variables["ACCRUE_SPOOL_DIR"].startswith("/tmp/")
        assert variables["ACCRUE_WORKERS_ENABLED"] == variables["ACCRUE_SCHEDULER_ENABLED"] == "false"


def test_every_handler_names_a_function_defined_in_the_source_tree(resources: Resources) -> None:
    # Read, not imported: the CDK app never imports handler modules either.
    for function in of_type(resources, "AWS::Lambda::Function").values():
        module, _, name = function["Properties"]["Handler"].rpartition(".")
        path = SOURCE / (module.replace(".", "/") + ".py")
        assert path.is_file(), path
        defined = {n.name for n in ast.parse(path.read_text(encoding="utf-8")).body if isinstance(n, ast.FunctionDef)}
        assert name in defined, f"{module} defines no {name}()"


def test_every_function_has_its_own_log_group_with_retention(resources: Resources) -> None:
    functions = of_type(resources, "AWS::Lambda::Function")
    log_groups = of_type(resources, "AWS::Logs::LogGroup")
    used = []
    for logical_id, function in functions.items():
        group_id = ref_id(function["Properties"]["LoggingConfig"]["LogGroup"])
        group = log_groups[group_id or ""]["Properties"]
        assert group["LogGroupName"] == f"/aws/lambda/{function['Properties']['FunctionName']}", logical_id
        assert group["RetentionInDays"] == 365, logical_id
        assert ref_id(group["KmsKeyId"]) in of_type(resources, "AWS::KMS::Key"), logical_id
        used.append(group_id)
    assert len(set(used)) == len(functions)


def test_every_function_has_its_own_role_with_no_managed_policy(resources: Resources) -> None:
    functions = of_type(resources, "AWS::Lambda::Function")
    roles = of_type(resources, "AWS::IAM::Role")
    role_ids = [ref_id(f["Properties"]["Role"]) for f in functions.values()]

    assert len(set(role_ids)) == len(functions)
    for role_id in role_ids:
        role = roles[role_id or ""]["Properties"]
        (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "lambda.amazonaws.com"}
        assert "ManagedPolicyArns" not in role
        # Every other function's role is someone else's: no policy is attached to two roles.
    for policy in of_type(resources, "AWS::IAM::Policy").values():
        assert len(policy["Properties"]["Roles"]) == 1


def test_each_function_may_write_only_to_its_own_log_group(resources: Resources) -> None:
    functions = of_type(resources, "AWS::Lambda::Function")
    policies = of_type(resources, "AWS::IAM::Policy").values()
    for function in functions.values():
        role_id = ref_id(function["Properties"]["Role"])
        own_group = ref_id(function["Properties"]["LoggingConfig"]["LogGroup"])
        statements = [
            s
            for p in policies
            if ref_id(p["Properties"]["Roles"][0]) == role_id
            for s in p["Properties"]["PolicyDocument"]["Statement"]
        ]
        log_statements = [s for s in statements if any(str(a).startswith("logs:") for a in _list(s["Action"]))]
        assert [ref_id(s["Resource"]) for s in log_statements] == [own_group]


def test_scheduled_jobs_run_one_at_a_time_and_async_invocations_have_a_dead_letter_queue(
    resources: Resources,
) -> None:
    functions = {
        f["Properties"]["Handler"]: f["Properties"] for f in of_type(resources, "AWS::Lambda::Function").values()
    }
    for handler in (f"{HANDLERS}.schedules.payout_handler", f"{HANDLERS}.schedules.tier_review_handler"):
        assert functions[handler]["ReservedConcurrentExecutions"] == 1
    for handler in (
        f"{HANDLERS}.schedules.payout_handler",
        f"{HANDLERS}.schedules.tier_review_handler",
        f"{HANDLERS}.batch_files.handler",
    ):
        assert ref_id(functions[handler]["DeadLetterConfig"]["TargetArn"]) in dead_letter_queue_ids(resources)


def test_queue_workers_report_partial_batch_failures(resources: Resources) -> None:
    queues = of_type(resources, "AWS::SQS::Queue")
    mappings = [
        m["Properties"]
        for m in of_type(resources, "AWS::Lambda::EventSourceMapping").values()
        if ref_id(m["Properties"]["EventSourceArn"]) in queues
    ]
    handlers = {resources[ref_id(m["FunctionName"]) or ""]["Properties"]["Handler"] for m in mappings}

    assert handlers == {f"{HANDLERS}.payments_worker.handler", f"{HANDLERS}.notifications_worker.handler"}
    for mapping in mappings:
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["ScalingConfig"]["MaximumConcurrency"] >= 2


# -- IAM ------------------------------------------------------------------------------------------


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def all_statements(resources: Resources) -> list[tuple[str, dict[str, Any]]]:
    """Every policy statement in the template: identity policies, inline role policies, resource policies."""
    found = []
    for logical_id, resource in resources.items():
        props = resource.get("Properties", {})
        documents = [props.get("PolicyDocument"), props.get("KeyPolicy"), props.get("AssumeRolePolicyDocument")]
        documents += [p.get("PolicyDocument") for p in props.get("Policies", [])]
        for document in documents:
            if isinstance(document, dict):
                found += [(logical_id, s) for s in _list(document.get("Statement", []))]
    return found


def test_no_policy_statement_allows_every_action_on_every_resource(resources: Resources) -> None:
    statements = all_statements(resources)

    assert len(statements) > 50
    for logical_id, statement in statements:
        if statement.get("Effect") != "Allow":
            continue
        actions = _list(statement.get("Action", []))
        targets = _list(statement.get("Resource", []))
        assert not ("*" in actions and "*" in targets), (logical_id, statement)
        assert "NotAction" not in statement, (logical_id, statement)


def test_function_policies_name_their_actions_without_wildcards(resources: Resources) -> None:
    function_roles = {ref_id(f["Properties"]["Role"]) for f in of_type(resources, "AWS::Lambda::Function").values()}
    for policy in of_type(resources, "AWS::IAM::Policy").values():
        if ref_id(policy["Properties"]["Roles"][0]) not in function_roles:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            for action in _list(statement["Action"]):
                assert "*" not in action, statement
            if "*" in _list(statement["Resource"]):
                # X-Ray has no resource-level permissions: the only Resource "*" a function gets.
                assert all(str(a).startswith("xray:") for a in _list(statement["Action"])), statement


# -- API Gateway ----------------------------------------------------------------------------------


def test_the_api_stage_throttles_at_50_per_second_with_bursts_of_100_and_logs_access(resources: Resources) -> None:
    (stage,) = of_type(resources, "AWS::ApiGateway::Stage").values()
    props = stage["Properties"]

    assert props["StageName"] == ENV_SUFFIX
    assert props["TracingEnabled"] is True
    (settings,) = props["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == 50
    assert settings["ThrottlingBurstLimit"] == 100
    assert settings["DataTraceEnabled"] is False
    access_logs = resources[ref_id(props["AccessLogSetting"]["DestinationArn"]) or ""]
    assert access_logs["Type"] == "AWS::Logs::LogGroup"
    assert access_logs["Properties"]["RetentionInDays"] == 365


def test_a_usage_plan_with_an_api_key_allows_10000_requests_a_day(assertions: Template, resources: Resources) -> None:
    assertions.has_resource_properties(
        "AWS::ApiGateway::UsagePlan",
        {
            "Quota": {"Limit": 10_000, "Period": "DAY"},
            "Throttle": {"RateLimit": 50, "BurstLimit": 100},
            "UsagePlanName": f"accrue-usage-plan-{ENV_SUFFIX}",
        },
    )
    (plan_key,) = of_type(resources, "AWS::ApiGateway::UsagePlanKey").values()
    assert plan_key["Properties"]["KeyType"] == "API_KEY"
    assert resources[ref_id(plan_key["Properties"]["KeyId"]) or ""]["Type"] == "AWS::ApiGateway::ApiKey"
    assert "Value" not in resources[ref_id(plan_key["Properties"]["KeyId"]) or ""]["Properties"]


def test_every_secured_method_needs_the_jwt_authorizer_and_an_api_key(resources: Resources) -> None:
    (authorizer_id, authorizer), *_ = of_type(resources, "AWS::ApiGateway::Authorizer").items()
    methods = of_type(resources, "AWS::ApiGateway::Method").values()
    secured = [m["Properties"] for m in methods if m["Properties"]["AuthorizationType"] != "NONE"]
    public = [m["Properties"] for m in methods if m["Properties"]["AuthorizationType"] == "NONE"]

    assert authorizer["Properties"]["Type"] == "TOKEN"
    assert authorizer["Properties"]["IdentitySource"] == "method.request.header.Authorization"
    assert len(secured) > len(public) >= 1
    for method in secured:
        assert method["AuthorizationType"] == "CUSTOM"
        assert ref_id(method["AuthorizerId"]) == authorizer_id
        assert method["ApiKeyRequired"] is True


def test_post_bodies_are_validated_against_models_and_parameters_are_checked(resources: Resources) -> None:
    (validator_id, validator), *_ = of_type(resources, "AWS::ApiGateway::RequestValidator").items()
    models = of_type(resources, "AWS::ApiGateway::Model")
    posts = [
        m["Properties"]
        for m in of_type(resources, "AWS::ApiGateway::Method").values()
        if m["Properties"]["HttpMethod"] == "POST"
    ]
    with_models = [m for m in posts if m.get("RequestModels")]

    assert validator["Properties"]["ValidateRequestBody"] is True
    assert validator["Properties"]["ValidateRequestParameters"] is True
    assert len(with_models) >= 3, "POST /users, /orders, /transactions at least"
    for method in with_models:
        assert ref_id(method["RequestValidatorId"]) == validator_id
        model = models[ref_id(method["RequestModels"]["application/json"]) or ""]["Properties"]
        assert model["Schema"]["$schema"] == "http://json-schema.org/draft-04/schema#"
        assert model["Schema"]["type"] == "object"


@pytest.fixture(scope="module")
def model_schemas(resources: Resources) -> dict[str, dict[str, Any]]:
    return {
        m["Properties"]["Name"]: m["Properties"]["Schema"]
        for m in of_type(resources, "AWS::ApiGateway::Model").values()
    }


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        ({"memberId": "m-1", "transactionAmount": "12000.00", "transactionType": "purchase"}, True),
        ({"memberId": "m-1", "transactionAmount": 12.5, "transactionType": "bonus", "email": None}, True),
        # The application also reads snake_case (seed 000 clients): the gateway must not refuse it.
        ({"member_id": "m-1", "transaction_amount": "10", "transaction_type": "purchase"}, True),
        ({"transactionAmount": "10", "transactionType": "purchase"}, False),
        ({"memberId": "m-1", "transactionAmount": -5, "transactionType": "purchase"}, False),
        ({"memberId": "m-1", "transactionAmount": "1", "transactionType": "purchase", "points": 9}, False),
        ({"memberId": 7, "transactionAmount": "1", "transactionType": "purchase"}, False),
    ],
)
def test_the_transaction_model_checks_bodies_as_the_application_does(
    model_schemas: dict[str, dict[str, Any]], body: dict[str, Any], accepted: bool
) -> None:
    validator = Draft4Validator(model_schemas["TransactionRequest"])

    assert validator.is_valid(body) is accepted, list(validator.iter_errors(body))


def test_every_model_is_a_valid_draft_4_schema_without_patterns(model_schemas: dict[str, dict[str, Any]]) -> None:
    assert model_schemas
    for name, schema in model_schemas.items():
        Draft4Validator.check_schema(schema)
        assert '"pattern"' not in json.dumps(schema), name


def test_gateway_errors_use_the_application_error_envelope(resources: Resources) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in of_type(resources, "AWS::ApiGateway::GatewayResponse").values()
    }

    for response_type, code in (
        ("BAD_REQUEST_BODY", "VALIDATION_ERROR"),
        ("UNAUTHORIZED", "UNAUTHORIZED"),
        ("THROTTLED", "RATE_LIMIT_EXCEEDED"),
        ("QUOTA_EXCEEDED", "RATE_LIMIT_EXCEEDED"),
        ("DEFAULT_5XX", "INTERNAL_ERROR"),
    ):
        template = responses[response_type]["ResponseTemplates"]["application/json"]
        assert template.startswith('{"success": false, "error": {"code": "' + code + '"')


# -- schedules, workflow, alarms, names -----------------------------------------------------------


def test_every_domain_schedule_runs_on_eventbridge_scheduler_with_its_cron(resources: Resources) -> None:
    schedules = {
        s["Properties"]["Name"]: s["Properties"] for s in of_type(resources, "AWS::Scheduler::Schedule").values()
    }

    assert set(schedules) == {f"accrue-{s.name}-{ENV_SUFFIX}" for s in SCHEDULES}
    payout = schedules[f"accrue-monthly-payout-{ENV_SUFFIX}"]
    assert payout["ScheduleExpression"] == "cron(0 2 1 * ? *)"
    assert payout["ScheduleExpressionTimezone"] == "UTC"
    for schedule in SCHEDULES:
        props = schedules[f"accrue-{schedule.name}-{ENV_SUFFIX}"]
        assert props["ScheduleExpression"] == schedule.aws_expression
        assert props["FlexibleTimeWindow"] == {"Mode": "OFF"}
        target = resources[ref_id(props["Target"]["Arn"]) or ""]
        assert target["Properties"]["Handler"].startswith(f"{HANDLERS}.schedules.")
        assert json.loads(props["Target"]["Input"])["schedule"] == schedule.name
        assert ref_id(props["Target"]["DeadLetterConfig"]["Arn"]) in dead_letter_queue_ids(resources)
    assert schedules[f"accrue-tier-review-{ENV_SUFFIX}"]["ScheduleExpression"] == "cron(0 3 * * ? *)"


def test_the_payment_workflow_is_logged_traced_and_invokes_the_steps_function(resources: Resources) -> None:
    (machine,) = of_type(resources, "AWS::StepFunctions::StateMachine").values()
    props = machine["Properties"]

    assert props["StateMachineName"] == f"accrue-payment-workflow-{ENV_SUFFIX}"
    assert props["StateMachineType"] == "STANDARD"
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert json.loads(props["DefinitionString"]) == render_asl(PAYMENT_WORKFLOW)
    steps = resources[ref_id(props["DefinitionSubstitutions"]["WorkflowStepsFunctionArn"]) or ""]
    assert steps["Properties"]["Handler"] == f"{HANDLERS}.workflow_steps.handler"
    assert ref_id(props["EncryptionConfiguration"]["KmsKeyId"]) in of_type(resources, "AWS::KMS::Key")


def alarms_by_metric(resources: Resources) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for alarm in of_type(resources, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        names = (
            [props["MetricName"]]
            if "MetricName" in props
            else [m["MetricStat"]["Metric"]["MetricName"] for m in props["Metrics"] if "MetricStat" in m]
        )
        for name in set(names):
            found.setdefault(name, []).append(props)
    return found


def test_the_alarms_of_spec_section_7_exist_and_notify_the_alarm_topic(resources: Resources) -> None:
    alarms = alarms_by_metric(resources)
    topics = {t["Properties"]["TopicName"]: lid for lid, t in of_type(resources, "AWS::SNS::Topic").items()}
    alarm_topic = topics[f"accrue-alarms-{ENV_SUFFIX}"]

    assert len(alarms["Errors"]) == len(of_type(resources, "AWS::Lambda::Function"))
    assert len(alarms["ApproximateNumberOfMessagesVisible"]) == len(dead_letter_queue_ids(resources))
    assert len(alarms["5XXError"]) == 1
    assert {"ReadThrottleEvents", "WriteThrottleEvents"} <= set(alarms)
    assert len(alarms["ApproximateAgeOfOldestMessage"]) == 2
    assert "ExecutionsFailed" in alarms and "IteratorAge" in alarms
    for alarm in of_type(resources, "AWS::CloudWatch::Alarm").values():
        assert [ref_id(a) for a in alarm["Properties"]["AlarmActions"]] == [alarm_topic]


def test_dead_letter_alarms_fire_on_the_first_message(resources: Resources) -> None:
    for alarm in alarms_by_metric(resources)["ApproximateNumberOfMessagesVisible"]:
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["Threshold"] == 1
        assert alarm["Statistic"] == "Maximum"


def test_topics_and_the_secret_are_encrypted_with_the_customer_managed_key(resources: Resources) -> None:
    keys = of_type(resources, "AWS::KMS::Key")
    (key,) = keys.values()
    assert key["Properties"]["EnableKeyRotation"] is True
    for topic in of_type(resources, "AWS::SNS::Topic").values():
        assert ref_id(topic["Properties"]["KmsMasterKeyId"]) in keys
    secrets = {s["Properties"]["Name"]: s for s in of_type(resources, "AWS::SecretsManager::Secret").values()}
    assert set(secrets) == {f"accrue/{ENV_SUFFIX}/jwt-secret", f"accrue/{ENV_SUFFIX}/webhook-secrets"}
    for secret in secrets.values():
        assert ref_id(secret["Properties"]["KmsKeyId"]) in keys
        assert secret["DeletionPolicy"] == "Retain"
    jwt = secrets[f"accrue/{ENV_SUFFIX}/jwt-secret"]["Properties"]
    assert "SecretString" not in jwt
    assert jwt["GenerateSecretString"]["PasswordLength"] == 64


def test_the_webhook_secrets_start_empty_for_operators_to_fill_and_only_the_api_is_told_of_them(
    resources: Resources, template: dict[str, Any]
) -> None:
    (secret_id,) = (
        logical_id
        for logical_id, secret in of_type(resources, "AWS::SecretsManager::Secret").items()
        if secret["Properties"]["Name"] == f"accrue/{ENV_SUFFIX}/webhook-secrets"
    )
    props = resources[secret_id]["Properties"]
    # The providers issue the secrets: the stack never generates one, it starts with no provider on.
    assert props["SecretString"] == "{}"
    assert "GenerateSecretString" not in props
    told = {
        f["Properties"]["FunctionName"]: ref_id(f["Properties"]["Environment"]["Variables"][WEBHOOK_SECRETS])
        for f in of_type(resources, "AWS::Lambda::Function").values()
        if WEBHOOK_SECRETS in f["Properties"]["Environment"]["Variables"]
    }
    api_functions = {
        f["Properties"]["FunctionName"]
        for f in of_type(resources, "AWS::Lambda::Function").values()
        if f["Properties"]["Handler"] == f"{HANDLERS}.http.handler"
    }
    assert told == dict.fromkeys(api_functions, secret_id) and len(told) == 1
    assert ref_id(template["Outputs"]["WebhookSecretsArn"]["Value"]) == secret_id


NAME_PROPERTIES = (
    "FunctionName",
    "TableName",
    "QueueName",
    "TopicName",
    "BucketName",
    "RoleName",
    "LogGroupName",
    "AlarmName",
    "DashboardName",
    "StateMachineName",
    "Name",
    "UsagePlanName",
    "AliasName",
    "EventBusName",
)


def test_every_named_resource_carries_the_environment_suffix(resources: Resources) -> None:
    named = 0
    for logical_id, resource in resources.items():
        for prop in NAME_PROPERTIES:
            value = resource.get("Properties", {}).get(prop)
            # A Ref/GetAtt names another resource (checked there); models are named after schemas.
            if value is None or ref_id(value) or resource["Type"] == "AWS::ApiGateway::Model":
                continue
            text = json.dumps(value)
            assert re.search(rf"\b{ENV_SUFFIX}\b", text), (logical_id, prop, text)
            named += 1
    assert named > 60


def test_every_taggable_resource_carries_the_common_tags(resources: Resources) -> None:
    tagged = [r for r in resources.values() if "Tags" in r.get("Properties", {})]

    assert len(tagged) > 40
    for resource in tagged:
        tags = resource["Properties"]["Tags"]
        pairs = {t["Key"]: t["Value"] for t in tags} if isinstance(tags, list) else tags
        assert pairs.get("Project") == "accrue"
        assert pairs.get("Environment") == ENV_SUFFIX


def test_outputs_name_the_endpoints_and_resources(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]

    for name in (
        "ApiUrl",
        "ApiKeyId",
        "TableName",
        "ReportsBucket",
        "UploadsBucket",
        "WebhookArchiveBucket",
        "PaymentsQueueUrl",
        "NotificationsQueueUrl",
        "PaymentsDeadLetterQueueUrl",
        "NotificationsTopicArn",
        "AlarmTopicArn",
        "EventBusName",
        "PaymentStateMachineArn",
        "JwtSecretArn",
        "WebhookSecretsArn",
        "DashboardUrl",
    ):
        assert name in outputs, name
        assert outputs[name].get("Description")


def test_a_dashboard_shows_the_api_functions_queues_table_and_workflow(resources: Resources) -> None:
    (dashboard,) = of_type(resources, "AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])

    for metric in (
        "5XXError",
        "Invocations",
        "ApproximateAgeOfOldestMessage",
        "ConsumedWriteCapacityUnits",
        "ExecutionsStarted",
    ):
        assert metric in body, metric
