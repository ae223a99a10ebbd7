"""Notification channels on AWS: each channel message is published to the notifications SNS topic.

One topic serves every channel; the ``channel`` message attribute lets subscriptions filter
(an SMS or mobile-push platform subscription takes ``sms``/``push``, an e-mail relay ``email``).
The de-duplication key travels as an attribute too, so a subscriber can drop a repeat: the
dispatcher never sends one key twice, but SNS itself delivers at least once.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from accrue.domain.notification_channels import ChannelMessage
from accrue.ports import Notifier

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

# SNS subjects: at most 100 printable ASCII characters, no line breaks.
MAX_SUBJECT = 100


def sns_subject(subject: str) -> str:
    printable = "".join(c if 32 <= ord(c) < 127 else " " for c in subject).strip()
    return (printable or "accrue notification")[:MAX_SUBJECT]


class SnsNotifier(Notifier):
    def __init__(self, client: SNSClient, topic_arn: str) -> None:
        self.client = client
        self.topic_arn = topic_arn

    def send(self, message: ChannelMessage) -> None:
        payload = {
            "channel": message.channel.value,
            "dedupeKey": message.dedupe_key,
            "userId": message.user_id,
            "recipient": message.recipient,
            "subject": message.subject,
            "text": message.text,
        }
        if message.html is not None:
            payload["html"] = message.html
        self.client.publish(
            TopicArn=self.topic_arn,
            Subject=sns_subject(message.subject),
            Message=json.dumps(payload, ensure_ascii=False),
            MessageAttributes={
                "channel": {"DataType": "String", "StringValue": message.channel.value},
                "dedupeKey": {"DataType": "String", "StringValue": message.dedupe_key},
            },
        )
