"""The email channel on AWS: Amazon SES (API v2 ``SendEmail``), when a verified sender is configured.

The message is sent as SES "simple" content (subject, text and HTML parts, UTF-8), so SES builds
the MIME message and the function needs only ``ses:SendEmail`` (raw content is authorised as
``ses:SendRawEmail`` as well). The send's de-duplication key travels twice, so a repeat can be
recognised: verbatim in an ``X-Accrue-Dedupe-Key`` header (seen by mail systems and the recipient's
client) and, as a digest, in the ``dedupe-key`` message tag (seen by a configuration set's event
destinations: sends, deliveries, bounces). SES replaces any Message-ID we would set with its own.

A refused send (a ``ClientError``: unverified sender, sandbox recipient, throttling, no permission)
is not caught here: it reaches the dispatcher, which retries it and finally marks it failed.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from accrue.domain.notification_channels import Channel, ChannelMessage
from accrue.ports import Notifier

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sesv2.type_defs import BodyTypeDef, SendEmailRequestTypeDef

CHARSET = "UTF-8"
DEDUPE_HEADER = "X-Accrue-Dedupe-Key"
DEDUPE_TAG = "dedupe-key"
CHANNEL_TAG = "channel"


def dedupe_tag_value(dedupe_key: str) -> str:
    """SES tag values allow only ASCII letters, digits, ``_`` and ``-``: the key's SHA-256 (hex)."""
    return hashlib.sha256(dedupe_key.encode()).hexdigest()


def header_value(value: str) -> str:
    """SES header values are printable ASCII; anything else in a key becomes ``?`` (keys are ids)."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in value)


class SesEmailNotifier(Notifier):
    def __init__(self, client: SESV2Client, sender: str, *, configuration_set: str | None = None) -> None:
        self.client = client
        self.sender = sender
        self.configuration_set = configuration_set

    def request(self, message: ChannelMessage) -> SendEmailRequestTypeDef:
        """The ``SendEmail`` parameters for one message (refuses any channel but email)."""
        if message.channel is not Channel.EMAIL:
            raise ValueError(f"the SES email channel cannot send a {message.channel.value} message")
        body: BodyTypeDef = {"Text": {"Data": message.text, "Charset": CHARSET}}
        if message.html is not None:
            body["Html"] = {"Data": message.html, "Charset": CHARSET}
        request: SendEmailRequestTypeDef = {
            "FromEmailAddress": self.sender,
            "Destination": {"ToAddresses": [message.recipient]},
            "Content": {
                "Simple": {
                    "Subject": {"Data": message.subject, "Charset": CHARSET},
                    "Body": body,
                    "Headers": [{"Name": DEDUPE_HEADER, "Value": header_value(message.dedupe_key)}],
                }
            },
            "EmailTags": [
                {"Name": DEDUPE_TAG, "Value": dedupe_tag_value(message.dedupe_key)},
                {"Name": CHANNEL_TAG, "Value": message.channel.value},
            ],
        }
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        return request

    def send(self, message: ChannelMessage) -> None:
        self.client.send_email(**self.request(message))
