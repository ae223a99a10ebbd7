"""Each function's role allows the AWS calls its code makes, asserted on the synthesized template.

``NEEDS`` is derived from the boto3 calls on each handler's path (``src/accrue/entrypoints/lambdas``
and the adapters they build in ``src/accrue/adapters/aws``), as IAM actions on named resources:

- every handler builds its application in ``lambdas/runtime.py``, which reads the JWT secret named
  by ``ACCRUE_JWT_SECRET_ARN`` at cold start (the secret, like every data store, uses the CMK), and
  the webhook provider secrets named by ``ACCRUE_WEBHOOK_SECRETS_ARN`` where that is set: only in
  the API function, the one that serves ``/webhooks/*``;
- ``DynamoSession``: GetItem, BatchGetItem, Query (table and its indexes), TransactWriteItems
  (authorised as Put/Update/Delete/ConditionCheck), Scan (GDPR sweeps, API only);
- ``S3BlobStore``: put_object, multipart upload (PutObject, AbortMultipartUpload), get_object,
  head_object (GetObject; a missing key is 404 only with ListBucket), delete_object,
  list_objects_v2 (ListBucket), managed copy (GetObject on the source, PutObject and
  AbortMultipartUpload on the destination); webhook payloads live in the archive bucket, the rest
  in the reports bucket;
- ``SqsQueue`` / ``send_bodies``: SendMessageBatch (SendMessage), GetQueueAttributes (redrive
  policy, counts), GetQueueUrl, ReceiveMessage, DeleteMessage(Batch), ChangeMessageVisibility on
  the dead-letter queues; SNS Publish; EventBridge PutEvents; Step Functions StartExecution;
- ``SesEmailNotifier`` (only when the stack is given an SES sender, built by the notifications
  worker's dispatcher): SES v2 SendEmail with simple content, authorised as ``ses:SendEmail`` on the
  sender's identity and on the configuration set it names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from accrue_infra.acknowledgements import nag_reference
from tests.infra.conftest import ENV_SUFFIX, SES_CONTEXT, of_type

pytestmark = pytest.mark.infra

Resources = dict[str, dict[str, Any]]
Need = tuple[str, str]  # (IAM action, resource symbol: see ``Resolver.arn``)

STARTUP: set[Need] = {
    ("secretsmanager:GetSecretValue", "JwtSecret"),
    ("kms:Decrypt", "EncryptionKey"),
}
SQS_SEND: set[Need] = {("kms:GenerateDataKey", "EncryptionKey")}  # the queues use the CMK
TABLE_QUERIES: set[Need] = {
    ("dynamodb:GetItem", "DataTable"),
    ("dynamodb:BatchGetItem", "DataTable"),
    ("dynamodb:Query", "DataTable"),
    ("dynamodb:Query", "DataTable/index/GSI1"),
    ("dynamodb:Query", "DataTable/index/GSI2"),
}
TABLE_TRANSACTIONS: set[Need] = {
    ("dynamodb:PutItem", "DataTable"),
    ("dynamodb:UpdateItem", "DataTable"),
    ("dynamodb:DeleteItem", "DataTable"),
    ("dynamodb:ConditionCheckItem", "DataTable"),
}
STORE = TABLE_QUERIES | TABLE_TRANSACTIONS


def consume(queue: str) -> set[Need]:
    """What the SQS event source mapping does with the function's role."""
    return {
        ("sqs:ReceiveMessage", queue),
        ("sqs:DeleteMessage", queue),
        ("sqs:GetQueueAttributes", queue),
        ("kms:Decrypt", "EncryptionKey"),
    }


NEEDS: dict[str, set[Need]] = {
    "api": STARTUP
    | STORE
    | SQS_SEND
    | {
        # GDPR export and erasure sweep the whole table.
        ("dynamodb:Scan", "DataTable"),
        # Inbound webhooks: the providers' signing secrets, read at cold start.
        ("secretsmanager:GetSecretValue", "WebhookSecretsSecret"),
        # Inbound webhooks archive payloads; erasure lists, reads and deletes them.
        ("s3:PutObject", "BucketsWebhookArchive/*"),
        ("s3:GetObject", "BucketsWebhookArchive/*"),
        ("s3:DeleteObject", "BucketsWebhookArchive/*"),
        ("s3:ListBucket", "BucketsWebhookArchive"),
        # Batch files streamed in (multipart), payout reports read, erasure lists the default store.
        ("s3:PutObject", "BucketsReports/*"),
        ("s3:AbortMultipartUpload", "BucketsReports/*"),
        ("s3:GetObject", "BucketsReports/*"),
        ("s3:ListBucket", "BucketsReports"),
        # The uploaded batch file is handed to the batch-files function by a copy into uploads.
        ("s3:PutObject", "Uploads/*"),
        ("s3:AbortMultipartUpload", "Uploads/*"),
        ("kms:GenerateDataKey", "EncryptionKey"),
        # Enqueueing and redriving; dead-letter inspection.
        ("sqs:SendMessage", "MessagingPayments"),
        ("sqs:SendMessage", "MessagingNotifications"),
        ("sqs:GetQueueAttributes", "MessagingPayments"),
        ("sqs:GetQueueAttributes", "MessagingNotifications"),
        *(
            (action, dlq)
            for dlq in ("MessagingPaymentsDeadLetters", "MessagingNotificationsDeadLetters")
            for action in (
                "sqs:GetQueueUrl",
                "sqs:GetQueueAttributes",
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
            )
        ),
    },
    "authorizer": STARTUP,
    "stream": STARTUP
    | STORE
    | SQS_SEND
    | {
        ("dynamodb:DescribeStream", "DataTable:stream"),
        ("dynamodb:GetRecords", "DataTable:stream"),
        ("dynamodb:GetShardIterator", "DataTable:stream"),
        ("dynamodb:ListStreams", "DataTable:stream"),
        # Queued sends forwarded; failed batches to the mapping's on-failure queue.
        ("sqs:SendMessage", "MessagingPayments"),
        ("sqs:SendMessage", "MessagingNotifications"),
        ("sqs:SendMessage", "MessagingStreamFailures"),
        ("events:PutEvents", "MessagingEventBus"),
        # The MemberErased subscriber deletes archived webhook payloads (exists, then delete).
        ("s3:GetObject", "BucketsWebhookArchive/*"),
        ("s3:DeleteObject", "BucketsWebhookArchive/*"),
        ("s3:ListBucket", "BucketsWebhookArchive"),
    },
    "payments-worker": STARTUP
    | STORE
    | SQS_SEND
    | consume("MessagingPayments")
    | {
        ("states:StartExecution", "StateMachine"),
        # Without a state machine the handler runs the workflow itself and requeues follow-ups.
        ("sqs:SendMessage", "MessagingPayments"),
    },
    "notifications-worker": STARTUP
    | STORE
    | SQS_SEND
    | consume("MessagingNotifications")
    | {
        ("sns:Publish", "MessagingNotificationsTopic"),
        ("sqs:SendMessage", "MessagingNotifications"),
    },
    "batch-files": STARTUP
    | STORE
    | {
        # The digest is read from the upload, which is then the source of a copy into the store.
        ("s3:GetObject", "Uploads/*"),
        ("s3:GetObject", "BucketsReports/*"),
        ("s3:PutObject", "BucketsReports/*"),
        ("s3:AbortMultipartUpload", "BucketsReports/*"),
        ("s3:ListBucket", "BucketsReports"),
        ("kms:GenerateDataKey", "EncryptionKey"),
    },
    "payout": STARTUP
    | STORE
    | {
        ("s3:PutObject", "BucketsReports/*"),
        ("s3:AbortMultipartUpload", "BucketsReports/*"),
        ("kms:GenerateDataKey", "EncryptionKey"),
    },
    "tier-review": STARTUP | STORE,
    "workflow-steps": STARTUP | STORE,
}


# With an SES sender (tests.infra.conftest.SES_CONTEXT): what the notifications worker adds.
SES_SENDS: set[Need] = {
    ("ses:SendEmail", "SesSender"),
    ("ses:SendEmail", f"configuration-set/{SES_CONTEXT['ses_configuration_set']}"),
}
NEEDS_WITH_SES: dict[str, set[Need]] = {
    purpose: needs | (SES_SENDS if purpose == "notifications-worker" else set()) for purpose, needs in NEEDS.items()
}


class Resolver:
    """Resource symbols -> how the template spells that ARN (cdk-nag's rendering of intrinsics)."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    def logical_id(self, prefix: str) -> str:
        # A logical id is the construct path plus an 8-character hash: the prefix alone is ambiguous
        # (MessagingPayments / MessagingPaymentsDeadLetters), the prefix plus the hash is not.
        found = [i for i in self.resources if i.startswith(prefix) and len(i) == len(prefix) + 8]
        assert len(found) == 1, f"{prefix}: {found}"
        return found[0]

    def name(self, kind: str, prop: str) -> str:
        (resource,) = of_type(self.resources, kind).values()
        return nag_reference(resource["Properties"][prop])

    def arn(self, symbol: str) -> str:
        base, _, suffix = symbol.partition("/")
        suffix = "/" + suffix if suffix else ""
        if base == "Uploads":
            # Referenced by name (the bucket notifies a function that reads it: no cycle).
            uploads = self.resources[self.logical_id("BucketsUploads")]
            return f"arn:<AWS::Partition>:s3:::{nag_reference(uploads['Properties']['BucketName'])}{suffix}"
        if base == "StateMachine":
            name = self.name("AWS::StepFunctions::StateMachine", "StateMachineName")
            return f"arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:stateMachine:{name}"
        if base == "SesSender":
            # EmailIdentity's ARN is formatted from its name (its Ref).
            return f"arn:<AWS::Partition>:ses:<AWS::Region>:<AWS::AccountId>:identity/<{self.logical_id(base)}>"
        if base == "configuration-set":
            # Not a resource of the stack: named in the settings, owned by the operator.
            return f"arn:<AWS::Partition>:ses:<AWS::Region>:<AWS::AccountId>:configuration-set{suffix}"
        if base.endswith(":stream"):
            return f"<{self.logical_id(base.removesuffix(':stream'))}.StreamArn>"
        logical_id = self.logical_id(base)
        if self.resources[logical_id]["Type"] in ("AWS::SecretsManager::Secret", "AWS::SNS::Topic"):
            return f"<{logical_id}>{suffix}"  # their Ref is the ARN
        return f"<{logical_id}.Arn>{suffix}"


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_id(resources: Resources, purpose: str) -> str:
    name = f"accrue-{purpose}-{ENV_SUFFIX}"
    (function,) = (
        f for f in of_type(resources, "AWS::Lambda::Function").values() if f["Properties"]["FunctionName"] == name
    )
    return str(function["Properties"]["Role"]["Fn::GetAtt"][0])


def allowed(resources: Resources, role: str) -> Iterator[tuple[str, str]]:
    """(action, rendered resource) of every Allow statement in the policies attached to ``role``."""
    for policy in of_type(resources, "AWS::IAM::Policy").values():
        if {"Ref": role} not in policy["Properties"].get("Roles", []):
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] != "Allow":
                continue
            for action in listed(statement["Action"]):
                for resource in listed(statement["Resource"]):
                    yield action, nag_reference(resource)


def test_every_function_of_the_stack_has_its_needs_listed(resources: Resources) -> None:
    names = {f["Properties"]["FunctionName"] for f in of_type(resources, "AWS::Lambda::Function").values()}
    assert names == {f"accrue-{purpose}-{ENV_SUFFIX}" for purpose in NEEDS}


def missing_grants(resources: Resources, purpose: str, needs: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (action, resource symbol) pairs the function's code calls that its role does not allow."""
    resolve = Resolver(resources)
    granted = set(allowed(resources, role_id(resources, purpose)))
    return sorted((action, symbol) for action, symbol in needs if (action, resolve.arn(symbol)) not in granted)


def roles_allowed(resources: Resources, wanted: str) -> set[str]:
    """The functions whose role allows the action ``wanted`` on anything."""
    return {
        purpose
        for purpose in NEEDS
        if any(action == wanted for action, _ in allowed(resources, role_id(resources, purpose)))
    }


@pytest.mark.parametrize("purpose", sorted(NEEDS))
def test_each_function_role_allows_every_call_its_code_makes_on_the_exact_resource(
    resources: Resources, purpose: str
) -> None:
    missing = missing_grants(resources, purpose, NEEDS[purpose])
    assert not missing, f"accrue-{purpose} may not: {missing}"


def test_only_the_notifications_worker_may_publish_to_the_notifications_topic(resources: Resources) -> None:
    # The dispatcher's channels are the only code that publishes to SNS, and only the notifications
    # worker runs the dispatcher (the stream forwards queued sends to SQS).
    assert roles_allowed(resources, "sns:Publish") == {"notifications-worker"}


def test_no_role_may_batch_write_the_table(resources: Resources) -> None:
    # Every write is a (transactional) put, update or delete that can carry a condition; a batch
    # write cannot, and no code makes one: not granted.
    assert roles_allowed(resources, "dynamodb:BatchWriteItem") == set()


def test_only_the_api_may_scan_the_table(resources: Resources) -> None:
    # Scans read every item (personal data of all members); only the GDPR endpoints need them.
    assert roles_allowed(resources, "dynamodb:Scan") == {"api"}


SECRET_VARIABLES = {"ACCRUE_JWT_SECRET_ARN": "JwtSecret", "ACCRUE_WEBHOOK_SECRETS_ARN": "WebhookSecretsSecret"}


@pytest.mark.parametrize(("variable", "symbol"), sorted(SECRET_VARIABLES.items()))
def test_every_function_that_is_told_a_secret_arn_may_read_that_secret(
    resources: Resources, variable: str, symbol: str
) -> None:
    resolve = Resolver(resources)
    told = 0
    for function in of_type(resources, "AWS::Lambda::Function").values():
        variables = function["Properties"]["Environment"]["Variables"]
        if variable not in variables:
            continue
        told += 1
        secret = nag_reference(variables[variable])
        assert secret == resolve.arn(symbol)
        granted = set(allowed(resources, str(function["Properties"]["Role"]["Fn::GetAtt"][0])))
        assert ("secretsmanager:GetSecretValue", secret) in granted, function["Properties"]["FunctionName"]
    assert told >= 1, variable


def test_only_the_api_is_told_where_the_webhook_secrets_are_and_may_read_them(resources: Resources) -> None:
    # The API function serves /webhooks/* (every API route integrates with it); no other function
    # verifies a provider's signature, so none gets the variable or the grant (least privilege).
    resolve = Resolver(resources)
    jwt_secret, webhook_secrets = resolve.arn("JwtSecret"), resolve.arn("WebhookSecretsSecret")
    told, readers = set(), set()
    for purpose in NEEDS:
        name = f"accrue-{purpose}-{ENV_SUFFIX}"
        (function,) = (
            f for f in of_type(resources, "AWS::Lambda::Function").values() if f["Properties"]["FunctionName"] == name
        )
        if "ACCRUE_WEBHOOK_SECRETS_ARN" in function["Properties"]["Environment"]["Variables"]:
            told.add(purpose)
        # Any Secrets Manager action on anything but the JWT secret (a wildcard resource included).
        secrets = {r for a, r in allowed(resources, role_id(resources, purpose)) if a.startswith("secretsmanager:")}
        if secrets - {jwt_secret}:
            readers.add(purpose)
            assert secrets - {jwt_secret} == {webhook_secrets}, purpose
    assert told == readers == {"api"}


@pytest.mark.parametrize("purpose", sorted(NEEDS_WITH_SES))
def test_with_an_ses_sender_each_role_still_allows_every_call_its_code_makes(
    ses_resources: Resources, purpose: str
) -> None:
    missing = missing_grants(ses_resources, purpose, NEEDS_WITH_SES[purpose])
    assert not missing, f"accrue-{purpose} may not: {missing}"


def ses_grants(resources: Resources) -> dict[str, set[tuple[str, str]]]:
    """purpose -> every SES (action, resource) its role allows."""
    return {
        purpose: {(a, r) for a, r in allowed(resources, role_id(resources, purpose)) if a.startswith("ses:")}
        for purpose in NEEDS
    }


def test_only_the_notifications_worker_may_send_email_and_only_from_its_sender(ses_resources: Resources) -> None:
    # Least privilege: one action (simple content needs no SendRawEmail), the sender's identity and
    # the configuration set, and no other function (none of them runs the dispatcher).
    resolve = Resolver(ses_resources)
    grants = {purpose: found for purpose, found in ses_grants(ses_resources).items() if found}
    assert grants == {"notifications-worker": {(action, resolve.arn(symbol)) for action, symbol in SES_SENDS}}


def test_without_an_ses_sender_no_role_has_any_ses_permission(resources: Resources) -> None:
    assert all(not found for found in ses_grants(resources).values())
