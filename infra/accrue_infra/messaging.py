"""How work moves: SQS work queues (each with its dead-letter queue), failure queues, SNS topics, the event bus."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_events as events
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from accrue_infra import acknowledgements as ack
from accrue_infra.settings import DeploymentSettings

# SPEC 4 / seed 004: a message that fails 3 receives moves to the dead-letter queue, kept 14 days.
MAX_RECEIVE_COUNT = 3
DEAD_LETTER_RETENTION = Duration.days(14)
# Work queues keep messages 4 days (seed 004): enough for a long weekend outage.
WORK_RETENTION = Duration.days(4)


@dataclass(frozen=True)
class WorkQueue:
    queue: sqs.Queue
    dead_letter: sqs.Queue


class Messaging(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: DeploymentSettings,
        key: kms.IKey,
        payments_visibility: Duration,
        notifications_visibility: Duration,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._key = key
        self._removal = RemovalPolicy.DESTROY if settings.destroyable else RemovalPolicy.RETAIN

        self.payments = self._work_queue("Payments", "payments", payments_visibility)
        self.notifications = self._work_queue("Notifications", "notifications", notifications_visibility)
        # Failure destinations that are not redrive targets of a work queue.
        self.stream_failures = self._failure_queue("StreamFailures", "stream-failures")
        # cdk-nag recognises a Lambda dead-letter queue by itself; the other two need saying.
        self.async_failures = self._failure_queue("AsyncFailures", "async-failures", nag_knows_it_is_a_dlq=True)
        self.scheduler_failures = self._failure_queue("SchedulerFailures", "scheduler-failures")

        self.notifications_topic = sns.Topic(
            self,
            "NotificationsTopic",
            topic_name=settings.name("notifications"),
            display_name="accrue notifications",
            master_key=key,
            enforce_ssl=True,
        )
        self.alarm_topic = sns.Topic(
            self,
            "AlarmTopic",
            topic_name=settings.name("alarms"),
            display_name="accrue alarms",
            master_key=key,
            enforce_ssl=True,
        )
        if settings.alarm_email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(settings.alarm_email))

        self.event_bus = events.EventBus(self, "EventBus", event_bus_name=settings.name("events"))

    def _work_queue(self, construct_id: str, purpose: str, visibility: Duration) -> WorkQueue:
        dead_letter = sqs.Queue(
            self,
            f"{construct_id}DeadLetters",
            queue_name=self._settings.name(f"{purpose}-dlq"),
            retention_period=DEAD_LETTER_RETENTION,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self._key,
            enforce_ssl=True,
            removal_policy=self._removal,
        )
        queue = sqs.Queue(
            self,
            construct_id,
            queue_name=self._settings.name(purpose),
            visibility_timeout=visibility,
            retention_period=WORK_RETENTION,
            receive_message_wait_time=Duration.seconds(20),
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self._key,
            # Reuse data keys for 5 minutes: KMS calls (and their cost) drop by orders of magnitude.
            data_key_reuse=Duration.minutes(5),
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=dead_letter, max_receive_count=MAX_RECEIVE_COUNT),
            removal_policy=self._removal,
        )
        return WorkQueue(queue=queue, dead_letter=dead_letter)

    def _failure_queue(self, construct_id: str, purpose: str, *, nag_knows_it_is_a_dlq: bool = False) -> sqs.Queue:
        queue = sqs.Queue(
            self,
            construct_id,
            queue_name=self._settings.name(purpose),
            retention_period=DEAD_LETTER_RETENTION,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self._key,
            enforce_ssl=True,
            removal_policy=self._removal,
        )
        if not nag_knows_it_is_a_dlq:
            ack.acknowledge(queue, "AwsSolutions-SQS3", "dlq-itself")
        return queue
