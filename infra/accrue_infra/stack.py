"""The accrue stack: every AWS resource of SPEC section 7, composed from one construct per concern."""

from __future__ import annotations

import json

from aws_cdk import ArnFormat, Aws, CfnOutput, Duration, Environment, RemovalPolicy, Stack, Tags
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_ses as ses
from constructs import Construct

from accrue.adapters.aws import table as table_design
from accrue.domain.schedules import DAILY_TIER_REVIEW, MONTHLY_PAYOUT
from accrue_infra import permissions as allow
from accrue_infra.api import RestApi, load_openapi
from accrue_infra.data import Buckets, DataTable, EncryptionKey, JwtSecret, WebhookSecrets
from accrue_infra.function import AccrueFunction, FunctionSpec
from accrue_infra.messaging import Messaging
from accrue_infra.monitoring import Monitoring
from accrue_infra.scheduling import Schedules
from accrue_infra.settings import OPENAPI_DOCUMENT, RETENTION_DAYS, DeploymentSettings
from accrue_infra.workflow import PaymentWorkflow, state_machine_arn

HANDLERS = "accrue.entrypoints.lambdas"

# Seed figures where the seeds have them (payment processor 60 s/512 MB, batch processor and
# payout 300 s/1024 MB, stream processor 60 s); API Gateway stops waiting after 29 s.
API = FunctionSpec(
    purpose="api",
    handler=f"{HANDLERS}.http.handler",
    description="HTTP API (FastAPI through Mangum)",
    memory_mb=1024,
    timeout=Duration.seconds(29),
)
AUTHORIZER = FunctionSpec(
    purpose="authorizer",
    handler=f"{HANDLERS}.authorizer.handler",
    description="API Gateway TOKEN authorizer (JWT)",
    memory_mb=256,
    timeout=Duration.seconds(10),
)
STREAM = FunctionSpec(
    purpose="stream",
    handler=f"{HANDLERS}.stream.handler",
    description="Table stream: deliver outbox messages, forward queued sends",
    memory_mb=512,
    timeout=Duration.seconds(60),
)
PAYMENTS_WORKER = FunctionSpec(
    purpose="payments-worker",
    handler=f"{HANDLERS}.payments_worker.handler",
    description="Payments queue: move each payment through the payment workflow",
    memory_mb=512,
    timeout=Duration.seconds(60),
)
NOTIFICATIONS_WORKER = FunctionSpec(
    purpose="notifications-worker",
    handler=f"{HANDLERS}.notifications_worker.handler",
    description="Notifications queue: deliver notifications and outbound webhooks",
    memory_mb=256,
    timeout=Duration.seconds(30),
)
WORKFLOW_STEPS = FunctionSpec(
    purpose="workflow-steps",
    handler=f"{HANDLERS}.workflow_steps.handler",
    description="Payment workflow tasks (Step Functions)",
    memory_mb=256,
    timeout=Duration.seconds(30),
)
# SQS visibility timeout: six times the consumer's timeout (AWS guidance for Lambda consumers).
VISIBILITY_FACTOR = 6


class AccrueStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: DeploymentSettings,
        description: str,
        env: Environment | None = None,
    ) -> None:
        super().__init__(scope, construct_id, description=description, env=env)
        self.settings = settings
        for name, value in {
            "Project": "accrue",
            "Environment": settings.env_suffix,
            "ManagedBy": "aws-cdk",
            **settings.extra_tags,
        }.items():
            Tags.of(self).add(name, value)

        removal = RemovalPolicy.DESTROY if settings.destroyable else RemovalPolicy.RETAIN
        retention = getattr(logs.RetentionDays, RETENTION_DAYS[settings.log_retention_days])
        key = EncryptionKey(self, "Encryption", settings=settings).key
        data = DataTable(self, "Data", settings=settings, key=key)
        buckets = Buckets(self, "Buckets", settings=settings, key=key)
        jwt_secret = JwtSecret(self, "JwtSecret", settings=settings, key=key).secret
        webhook_secrets = WebhookSecrets(self, "WebhookSecrets", settings=settings, key=key).secret
        messaging = Messaging(
            self,
            "Messaging",
            settings=settings,
            key=key,
            payments_visibility=_visibility(PAYMENTS_WORKER),
            notifications_visibility=_visibility(NOTIFICATIONS_WORKER),
        )
        payout_spec = FunctionSpec(
            purpose="payout",
            handler=f"{HANDLERS}.schedules.payout_handler",
            description="Monthly referral payout run",
            memory_mb=1024,
            timeout=Duration.seconds(300),
            reserved_concurrency=1,
            async_dead_letter_queue=messaging.async_failures,
        )
        tier_review_spec = FunctionSpec(
            purpose="tier-review",
            handler=f"{HANDLERS}.schedules.tier_review_handler",
            description="Daily tier review",
            memory_mb=1024,
            timeout=Duration.seconds(900),
            reserved_concurrency=1,
            async_dead_letter_queue=messaging.async_failures,
        )
        batch_files_spec = FunctionSpec(
            purpose="batch-files",
            handler=f"{HANDLERS}.batch_files.handler",
            description="Payment batch files uploaded to S3 (.csv)",
            memory_mb=1024,
            timeout=Duration.seconds(300),
            async_dead_letter_queue=messaging.async_failures,
        )

        # Referenced by name, not by resource, to avoid cycles (the state machine invokes a function
        # that carries this ARN; the uploads bucket notifies a function that reads it).
        workflow_arn = state_machine_arn(settings)
        uploads_arn = f"arn:{Aws.PARTITION}:s3:::{buckets.uploads_bucket_name}"
        environment = {
            "ACCRUE_BACKEND": "aws",
            "ACCRUE_ENV": "production",
            "ACCRUE_TABLE_NAME": data.table.table_name,
            "ACCRUE_PAYMENTS_QUEUE_URL": messaging.payments.queue.queue_url,
            "ACCRUE_NOTIFICATIONS_QUEUE_URL": messaging.notifications.queue.queue_url,
            "ACCRUE_REPORTS_BUCKET": buckets.reports.bucket_name,
            "ACCRUE_UPLOADS_BUCKET": buckets.uploads_bucket_name,
            "ACCRUE_ARCHIVE_BUCKET": buckets.archive.bucket_name,
            "ACCRUE_NOTIFICATIONS_TOPIC_ARN": messaging.notifications_topic.topic_arn,
            "ACCRUE_EVENT_BUS_NAME": messaging.event_bus.event_bus_name,
            "ACCRUE_PAYMENT_STATE_MACHINE_ARN": workflow_arn,
            "ACCRUE_JWT_SECRET_ARN": jwt_secret.secret_arn,
            "POWERTOOLS_SERVICE_NAME": "accrue",
            "POWERTOOLS_METRICS_NAMESPACE": "accrue",
            # Lambda's only writable directory: streamed CSV uploads spool here.
            "ACCRUE_SPOOL_DIR": "/tmp/accrue-spool",  # noqa: S108 - per-sandbox, not shared
            # Events, queues and schedules reach functions through AWS; no in-process workers.
            "ACCRUE_WORKERS_ENABLED": "false",
            "ACCRUE_SCHEDULER_ENABLED": "false",
        }
        code = lambda_.Code.from_asset(
            str(settings.lambda_code_dir()), exclude=["**/__pycache__", "**/*.pyc", "*.dist-info/RECORD"]
        )

        def function(
            construct_id: str,
            spec: FunctionSpec,
            *statements: iam.PolicyStatement,
            own_environment: dict[str, str] | None = None,
        ) -> AccrueFunction:
            return AccrueFunction(
                self,
                construct_id,
                spec=spec,
                name=settings.name(spec.purpose),
                code=code,
                environment={**environment, **(own_environment or {})},
                key=key,
                log_retention=retention,
                removal_policy=removal,
                # Every handler builds its application through lambdas/runtime.py, which reads the
                # JWT secret named by ACCRUE_JWT_SECRET_ARN at cold start (production refuses to
                # start without it), so every role needs it, not only the API and the authorizer.
                statements=[allow.use_key(key), allow.read_secret("ReadJwtSecret", jwt_secret.secret_arn), *statements],
            )

        payments, notifications = messaging.payments, messaging.notifications
        api_function = function(
            "ApiFunction",
            API,
            allow.read_table(data),
            allow.write_table(data),
            # GDPR export and erasure sweep the whole table (personal data, webhook deliveries).
            allow.scan_table(data),
            # Inbound webhooks archive their payloads; GDPR erasure lists, reads and deletes them.
            allow.objects(
                "ArchivedWebhooks", buckets.archive.bucket_arn, ("s3:PutObject", "s3:GetObject", "s3:DeleteObject")
            ),
            allow.list_bucket("ListArchivedWebhooks", buckets.archive.bucket_arn),
            # The blob store: payout reports (read), uploaded batch files (write); erasure lists it too.
            *allow.use_blob_store("BlobStore", buckets.reports.bucket_arn),
            # An uploaded batch file is handed to the batch-files function by an S3 copy into uploads.
            allow.copy_into("HandOverBatchFiles", uploads_arn),
            allow.send_to("EnqueueAndRedrive", payments.queue, notifications.queue),
            allow.drain("InspectDeadLetters", payments.dead_letter, notifications.dead_letter),
            # Only this function serves /webhooks/*: it alone is told where the providers' signing
            # secrets are, and reads them at cold start.
            allow.read_secret("ReadWebhookSecrets", webhook_secrets.secret_arn),
            own_environment={"ACCRUE_WEBHOOK_SECRETS_ARN": webhook_secrets.secret_arn},
        )
        authorizer_function = function("AuthorizerFunction", AUTHORIZER)
        stream_function = function(
            "StreamFunction",
            STREAM,
            allow.read_stream(data),
            allow.read_table(data),
            allow.write_table(data),
            allow.send_to("DispatchWork", payments.queue, notifications.queue),
            allow.send_to("FailedBatches", messaging.stream_failures),
            allow.put_events(messaging.event_bus.event_bus_arn),
            # The MemberErased subscriber finishes deleting archived webhook payloads (exists, delete).
            allow.objects("DeleteErasedPayloads", buckets.archive.bucket_arn, ("s3:GetObject", "s3:DeleteObject")),
            allow.list_bucket("ListArchivedWebhooks", buckets.archive.bucket_arn),
        )
        payments_worker = function(
            "PaymentsWorkerFunction",
            PAYMENTS_WORKER,
            allow.read_table(data),
            allow.write_table(data),
            # A payment waiting for its next retry goes back to the queue with a delay.
            allow.send_to("RequeueFollowUps", payments.queue),
            allow.start_executions(workflow_arn),
        )
        # Member e-mail through SES when a sender is configured: only the notifications worker runs
        # the dispatcher, so only it is told the sender and may send from that identity.
        mail_statements: list[iam.PolicyStatement] = []
        mail_environment: dict[str, str] = {}
        if settings.ses_from_address:
            sender = ses.EmailIdentity(self, "SesSender", identity=ses.Identity.email(settings.ses_from_address))
            mail_resources = [sender.email_identity_arn]
            mail_environment["ACCRUE_SES_FROM_ADDRESS"] = settings.ses_from_address
            if settings.ses_configuration_set:
                mail_resources.append(
                    self.format_arn(
                        service="ses",
                        resource="configuration-set",
                        resource_name=settings.ses_configuration_set,
                        arn_format=ArnFormat.SLASH_RESOURCE_NAME,
                    )
                )
                mail_environment["ACCRUE_SES_CONFIGURATION_SET"] = settings.ses_configuration_set
            mail_statements.append(allow.send_email("SendMemberEmail", *mail_resources))
        notifications_worker = function(
            "NotificationsWorkerFunction",
            NOTIFICATIONS_WORKER,
            allow.read_table(data),
            allow.write_table(data),
            allow.publish_to("DeliverNotifications", messaging.notifications_topic),
            *mail_statements,
            # Wakes itself up (delayed message) when the next retry of a delivery is due.
            allow.send_to("ScheduleWakeUp", notifications.queue),
            own_environment=mail_environment,
        )
        batch_files = function(
            "BatchFilesFunction",
            batch_files_spec,
            allow.read_objects("ReadUploads", uploads_arn),
            # The file is copied into the blob store (S3 to S3) and ingested from there.
            *allow.use_blob_store("BlobStore", buckets.reports.bucket_arn),
            # Rows are enqueued as queue items in the table's transactions; the stream forwards them.
            allow.read_table(data),
            allow.write_table(data),
        )
        payout = function(
            "PayoutFunction",
            payout_spec,
            allow.read_table(data),
            allow.write_table(data),
            *allow.use_blob_store("BlobStore", buckets.reports.bucket_arn),
        )
        tier_review = function("TierReviewFunction", tier_review_spec, allow.read_table(data), allow.write_table(data))
        workflow_steps = function(
            "WorkflowStepsFunction", WORKFLOW_STEPS, allow.read_table(data), allow.write_table(data)
        )
        self.functions = (
            api_function,
            authorizer_function,
            stream_function,
            payments_worker,
            notifications_worker,
            batch_files,
            payout,
            tier_review,
            workflow_steps,
        )

        # -- event sources -------------------------------------------------------------------------
        stream_mapping = lambda_.CfnEventSourceMapping(
            self,
            "StreamMapping",
            function_name=stream_function.function.function_name,
            event_source_arn=data.stream_arn,
            # Outbox messages written before the mapping existed must still leave.
            starting_position="TRIM_HORIZON",
            batch_size=100,
            # Seed 000: a 5 s batching window, 10 batches per shard in parallel, 3 retries.
            maximum_batching_window_in_seconds=5,
            parallelization_factor=10,
            maximum_retry_attempts=3,
            bisect_batch_on_function_error=True,
            function_response_types=["ReportBatchItemFailures"],
            filter_criteria=lambda_.CfnEventSourceMapping.FilterCriteriaProperty(
                filters=[
                    lambda_.CfnEventSourceMapping.FilterProperty(pattern=_json(table_design.STREAM_FILTER_PATTERN))
                ]
            ),
            destination_config=lambda_.CfnEventSourceMapping.DestinationConfigProperty(
                on_failure=lambda_.CfnEventSourceMapping.OnFailureProperty(
                    destination=messaging.stream_failures.queue_arn
                )
            ),
        )
        stream_mapping.node.add_dependency(stream_function.role)
        for worker, queue, concurrency in (
            (payments_worker, payments.queue, 10),
            (notifications_worker, notifications.queue, 5),
        ):
            worker.function.add_event_source(
                sources.SqsEventSource(
                    queue, batch_size=10, report_batch_item_failures=True, max_concurrency=concurrency
                )
            )

        # S3 -> batch-files function, declared on the bucket itself (no custom-resource Lambda).
        permission = batch_files.function.add_permission(
            "InvokeFromUploads",
            principal=iam.ServicePrincipal("s3.amazonaws.com"),
            source_arn=uploads_arn,
            source_account=Aws.ACCOUNT_ID,
        )
        uploads_cfn = buckets.uploads.node.default_child
        assert isinstance(uploads_cfn, s3.CfnBucket)
        uploads_cfn.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            lambda_configurations=[
                s3.CfnBucket.LambdaConfigurationProperty(
                    event="s3:ObjectCreated:*",
                    function=batch_files.function_arn,
                    filter=s3.CfnBucket.NotificationFilterProperty(
                        s3_key=s3.CfnBucket.S3KeyFilterProperty(
                            rules=[s3.CfnBucket.FilterRuleProperty(name="suffix", value=".csv")]
                        )
                    ),
                )
            ]
        )
        # S3 checks the permission when it saves the notification.
        if permission is not None:
            buckets.uploads.node.add_dependency(permission)
        else:
            buckets.uploads.node.add_dependency(batch_files.function)

        # -- API, workflow, schedules, monitoring --------------------------------------------------
        self.api = RestApi(
            self,
            "Api",
            settings=settings,
            document=load_openapi(OPENAPI_DOCUMENT),
            handler=api_function.function,
            authorizer_function=authorizer_function.function,
            key=key,
            log_retention=retention,
        )
        self.workflow = PaymentWorkflow(
            self,
            "PaymentWorkflow",
            settings=settings,
            steps_function=workflow_steps.function,
            key=key,
            log_retention=retention,
        )
        self.schedules = Schedules(
            self,
            "Schedules",
            settings=settings,
            targets={MONTHLY_PAYOUT.name: payout.function, DAILY_TIER_REVIEW.name: tier_review.function},
            dead_letter_queue=messaging.scheduler_failures,
            key=key,
        )
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            settings=settings,
            alarm_topic=messaging.alarm_topic,
            functions=self.functions,
            work_queues={"payments": payments.queue, "notifications": notifications.queue},
            dead_letter_queues={
                "payments-dlq": payments.dead_letter,
                "notifications-dlq": notifications.dead_letter,
                "stream-failures": messaging.stream_failures,
                "async-failures": messaging.async_failures,
                "scheduler-failures": messaging.scheduler_failures,
            },
            api=self.api.api,
            table=data.table,
            index_names=data.index_names,
            state_machine=self.workflow.state_machine,
            stream_function=stream_function,
        )

        # -- outputs ------------------------------------------------------------------------------
        outputs = {
            "ApiUrl": (self.api.url, "Base URL of the HTTP API (stage included)"),
            "ApiKeyId": (
                self.api.api_key.key_id,
                "Default client API key id: aws apigateway get-api-key --include-value",
            ),
            "TableName": (data.table.table_name, "The single DynamoDB table"),
            "ReportsBucket": (buckets.reports.bucket_name, "Payout reports (payouts/YYYY-MM/)"),
            "UploadsBucket": (buckets.uploads_bucket_name, "Drop payment batch files (.csv) here"),
            "WebhookArchiveBucket": (buckets.archive.bucket_name, "Raw webhook payloads"),
            "AccessLogsBucket": (buckets.access_logs.bucket_name, "S3 server access logs"),
            "PaymentsQueueUrl": (payments.queue.queue_url, "Payments work queue"),
            "PaymentsDeadLetterQueueUrl": (payments.dead_letter.queue_url, "Payments that failed 3 receives"),
            "NotificationsQueueUrl": (notifications.queue.queue_url, "Notifications work queue"),
            "NotificationsDeadLetterQueueUrl": (notifications.dead_letter.queue_url, "Notifications that failed"),
            "StreamFailuresQueueUrl": (messaging.stream_failures.queue_url, "Outbox stream batches that failed"),
            "AsyncFailuresQueueUrl": (messaging.async_failures.queue_url, "Failed S3/scheduled invocations"),
            "SchedulerFailuresQueueUrl": (messaging.scheduler_failures.queue_url, "Undeliverable scheduled runs"),
            "NotificationsTopicArn": (messaging.notifications_topic.topic_arn, "Member notifications (SNS)"),
            "AlarmTopicArn": (messaging.alarm_topic.topic_arn, "Subscribe on-call here"),
            "EventBusName": (messaging.event_bus.event_bus_name, "Domain events (EventBridge)"),
            "PaymentStateMachineArn": (self.workflow.state_machine.state_machine_arn, "Payment workflow"),
            "JwtSecretArn": (jwt_secret.secret_arn, "JWT signing secret (Secrets Manager)"),
            "WebhookSecretsArn": (
                webhook_secrets.secret_arn,
                "Inbound webhook signing secrets, JSON {stripe, shopify, standard} (Secrets Manager)",
            ),
            "DashboardUrl": (self.monitoring.dashboard_url(), "CloudWatch dashboard"),
        }
        for output_id, (value, description) in outputs.items():
            CfnOutput(self, output_id, value=value, description=description)


def _visibility(consumer: FunctionSpec) -> Duration:
    return Duration.seconds(consumer.timeout.to_seconds() * VISIBILITY_FACTOR)


def _json(pattern: object) -> str:
    return json.dumps(pattern, separators=(",", ":"), sort_keys=True)
