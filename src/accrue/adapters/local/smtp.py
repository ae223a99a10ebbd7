"""The email channel over SMTP (``smtplib``): multipart text + HTML, a stable Message-ID per send."""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from accrue.domain.notification_channels import ChannelMessage
from accrue.ports import Notifier


class SmtpNotifier(Notifier):
    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self.password = password
        self.starttls = starttls
        self.timeout_seconds = timeout_seconds

    def build(self, message: ChannelMessage) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = message.recipient
        email["Subject"] = message.subject
        email["Date"] = formatdate(usegmt=True)
        # Derived from the send's de-duplication key: if a message is ever handed over twice, mail
        # systems and clients see the same Message-ID and can drop the copy.
        domain = parseaddr(self.sender)[1].rpartition("@")[2] or "accrue.local"
        digest = hashlib.sha256(message.dedupe_key.encode()).hexdigest()[:40]
        email["Message-ID"] = f"<{digest}@{domain}>"
        email.set_content(message.text)
        if message.html:
            email.add_alternative(message.html, subtype="html")
        return email

    def send(self, message: ChannelMessage) -> None:
        email = self.build(message)
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds)
        try:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(email)
        finally:
            # Once the server accepted the message, a failed goodbye must not look like a failed
            # send (that would send it again).
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
