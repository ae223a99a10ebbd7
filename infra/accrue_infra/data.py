"""Where data lives: the customer managed key, the single DynamoDB table, the S3 buckets, the secrets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_cdk import Aws, Duration, RemovalPolicy, SecretValue
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from accrue.adapters.aws import table as table_design
from accrue_infra import acknowledgements as ack
from accrue_infra.settings import DeploymentSettings


class EncryptionKey(Construct):
    """One customer managed key (rotated yearly) for the table, queues, topics, buckets, logs and secrets.

    A customer managed key, rather than AWS managed keys, so that the key policy states who may
    decrypt, CloudTrail records every use, and deleting the stack cannot silently orphan data.
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: DeploymentSettings) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/accrue-{settings.env_suffix}",
            description=f"accrue {settings.env_suffix}: data at rest (table, queues, topics, buckets, logs, secrets)",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY if settings.destroyable else RemovalPolicy.RETAIN,
            pending_window=Duration.days(7 if settings.destroyable else 30),
        )
        # CloudWatch Logs encrypts log groups with the key, only for this account's log groups.
        log_groups_of_this_account = f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:*"
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchLogsEncryptLogGroups",
                principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
                actions=["kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey"],
                resources=["*"],
                conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": log_groups_of_this_account}},
            )
        )
        # CloudWatch alarms publish to the (encrypted) alarm topic.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublishToEncryptedTopic",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
            )
        )


class DataTable(Construct):
    """The single table, built from ``accrue.adapters.aws.table`` so code and table cannot drift."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: DeploymentSettings, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        string = dynamodb.AttributeType.STRING
        self.table = dynamodb.Table(
            self,
            "Table",
            table_name=settings.name("data"),
            partition_key=dynamodb.Attribute(name=table_design.PARTITION_KEY, type=string),
            sort_key=dynamodb.Attribute(name=table_design.SORT_KEY, type=string),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            stream=dynamodb.StreamViewType(table_design.STREAM_VIEW_TYPE),
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            time_to_live_attribute=table_design.TTL_ATTRIBUTE,
            deletion_protection=not settings.destroyable,
            removal_policy=RemovalPolicy.DESTROY if settings.destroyable else RemovalPolicy.RETAIN,
        )
        for index in table_design.GLOBAL_INDEXES:
            self.table.add_global_secondary_index(
                index_name=index.name,
                partition_key=dynamodb.Attribute(name=index.partition_key, type=string),
                sort_key=dynamodb.Attribute(name=index.sort_key, type=string),
                projection_type=dynamodb.ProjectionType.ALL,
            )
        self.index_names = tuple(index.name for index in table_design.GLOBAL_INDEXES)

    @property
    def stream_arn(self) -> str:
        arn = self.table.table_stream_arn
        assert arn is not None  # the table is created with a stream above
        return arn

    def index_arns(self) -> list[str]:
        return [f"{self.table.table_arn}/index/{name}" for name in self.index_names]


class Buckets(Construct):
    """Reports, uploads and the webhook archive; their server access logs go to a fourth bucket.

    All are versioned, block public access, refuse plain HTTP, and (except the access-log bucket,
    which S3 log delivery can only write with SSE-S3) are encrypted with the customer managed key.
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: DeploymentSettings, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.DESTROY if settings.destroyable else RemovalPolicy.RETAIN

        def global_name(purpose: str) -> str:
            # Bucket names are global: the account and region make them unique, the suffix readable.
            return f"{settings.name(purpose)}-{Aws.ACCOUNT_ID}-{Aws.REGION}"

        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            bucket_name=global_name("access-logs"),
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=removal,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=Duration.days(settings.log_retention_days),
                    noncurrent_version_expiration=Duration.days(30),
                )
            ],
        )

        def data_bucket(construct_id: str, purpose: str, lifecycle: list[s3.LifecycleRule]) -> s3.Bucket:
            return s3.Bucket(
                self,
                construct_id,
                bucket_name=global_name(purpose),
                encryption=s3.BucketEncryption.KMS,
                encryption_key=key,
                bucket_key_enabled=True,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                enforce_ssl=True,
                versioned=True,
                object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
                server_access_logs_bucket=self.access_logs,
                server_access_logs_prefix=f"{purpose}/",
                removal_policy=removal,
                lifecycle_rules=lifecycle,
            )

        # Payout reports are read in the month they are written, then kept for audits (SPEC 7).
        self.reports = data_bucket(
            "Reports",
            "reports",
            [
                s3.LifecycleRule(
                    id="reports-to-glacier-after-90-days",
                    transitions=[
                        s3.Transition(storage_class=s3.StorageClass.GLACIER, transition_after=Duration.days(90))
                    ],
                    noncurrent_version_transitions=[
                        s3.NoncurrentVersionTransition(
                            storage_class=s3.StorageClass.GLACIER, transition_after=Duration.days(90)
                        )
                    ],
                )
            ],
        )
        # Uploaded batch files: processed once (the batch id is the file's SHA-256), kept a year.
        self.uploads = data_bucket(
            "Uploads",
            "uploads",
            [
                s3.LifecycleRule(
                    id="expire-processed-uploads",
                    expiration=Duration.days(365),
                    noncurrent_version_expiration=Duration.days(30),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
        )
        # Raw webhook payloads, kept as evidence of what a provider sent.
        self.archive = data_bucket(
            "WebhookArchive",
            "webhook-archive",
            [
                s3.LifecycleRule(
                    id="archive-to-glacier-after-90-days",
                    transitions=[
                        s3.Transition(storage_class=s3.StorageClass.GLACIER, transition_after=Duration.days(90))
                    ],
                )
            ],
        )
        self.uploads_bucket_name = global_name("uploads")


class StackSecret(Construct):
    """A secret of the stack: ``accrue/<env>/<PURPOSE>``, encrypted with the customer managed key,
    kept unless the stack is destroyable, its cdk-nag rotation finding acknowledged with the reason
    ``ROTATION``. A subclass says what it holds and how it gets its first value."""

    PURPOSE: str
    DESCRIPTION: str
    ROTATION: str
    # How the secret gets its first value: the keyword arguments of ``secretsmanager.Secret`` that say
    # it (``generate_secret_string`` or ``secret_string_value``); each subclass defines it.
    first_value: Callable[[], dict[str, Any]]

    def __init__(self, scope: Construct, construct_id: str, *, settings: DeploymentSettings, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            secret_name=f"accrue/{settings.env_suffix}/{self.PURPOSE}",
            description=self.DESCRIPTION,
            encryption_key=key,
            removal_policy=RemovalPolicy.DESTROY if settings.destroyable else RemovalPolicy.RETAIN,
            **self.first_value(),
        )
        ack.acknowledge(self.secret, "AwsSolutions-SMG4", self.ROTATION)


class JwtSecret(StackSecret):
    """The HS256 signing secret of the API's JWTs: generated by Secrets Manager, never in the repo."""

    PURPOSE = "jwt-secret"
    DESCRIPTION = "HS256 signing secret of accrue's JWTs (read by the API and authorizer at cold start)"
    ROTATION = "secret-rotation"

    def first_value(self) -> dict[str, Any]:
        generator = secretsmanager.SecretStringGenerator(
            password_length=64, exclude_punctuation=True, include_space=False
        )
        return {"generate_secret_string": generator}


class WebhookSecrets(StackSecret):
    """The inbound webhook providers' signing secrets, one JSON document read by the HTTP function at
    cold start (``accrue.config.with_webhook_secrets``):
    ``{"stripe": [...], "shopify": [...], "standard": {"<source>": ["whsec_..."]}}``.

    The providers issue these secrets, so the stack cannot generate them: it creates the secret
    holding ``{}`` (every provider off) and operators put the real values in (docs/OPERATIONS.md).
    CloudFormation writes the initial value only when it creates the secret (or when this template
    value changes), so a deployment never overwrites what operators stored.
    """

    PURPOSE = "webhook-secrets"
    DESCRIPTION = (
        "Signing secrets of inbound webhooks, JSON "
        '{"stripe": [...], "shopify": [...], "standard": {"<source>": [...]}} (read by the API at cold start)'
    )
    ROTATION = "webhook-secret-rotation"

    def first_value(self) -> dict[str, Any]:
        # Not a secret: an empty document, which turns every provider off until operators fill it.
        return {"secret_string_value": SecretValue.unsafe_plain_text("{}")}
