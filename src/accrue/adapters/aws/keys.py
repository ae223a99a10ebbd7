"""Every DynamoDB key of the single table is built here, from one enum of prefixes.

Nothing else in the code base concatenates ``#``: a typo in a key would otherwise be a silent miss.
Sort keys that order things embed zero-padded numbers or UTC ISO-8601 timestamps, which sort
lexicographically in the same order as their values.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import zlib
from datetime import UTC, datetime

from accrue.adapters.aws.table import GSI1, GSI2, PARTITION_KEY, SORT_KEY

SEPARATOR = "#"
# Members are spread over this many GSI2 partitions so that listing every member (tier review)
# never funnels all member writes into one index partition.
MEMBER_SHARDS = 16

Key = dict[str, str]


class Prefix(enum.StrEnum):
    MEMBER = "MEMBER"
    MEMBERS = "MEMBERS"
    EMAIL = "EMAIL"
    REFCODE = "REFCODE"
    TRANSFER = "TRANSFER"
    ORDER = "ORDER"
    ORDERS = "ORDERS"
    NOTIFICATION = "NOTIFICATION"
    NOTIFICATIONS = "NOTIFICATIONS"
    OUTBOX = "OUTBOX"
    QUEUE = "QUEUE"
    CAMPAIGN = "CAMPAIGN"
    CAMPAIGNS = "CAMPAIGNS"
    ACCOUNT = "ACCOUNT"
    WEBHOOK_EVENT = "WEBHOOKEVT"
    ENDPOINT = "ENDPOINT"
    ENDPOINTS = "ENDPOINTS"
    DELIVERY = "DELIVERY"
    DELIVERY_KEY = "DELIVERYKEY"
    PREFERENCES = "PREFS"
    SEND = "SEND"
    SENDS = "SENDS"
    NOTIFY_QUEUE = "NOTIFYQ"
    IDENTITY = "IDENTITY"
    REFERRAL = "REFERRAL"
    REFERRED = "REFERRED"
    REFERRALS = "REFERRALS"
    PAYOUT_RUN = "PAYOUTRUN"
    PAYOUT_RUNS = "PAYOUTRUNS"
    PAYOUT = "PAYOUT"
    CLAIM = "CLAIM"
    PAYMENT = "PAYMENT"
    PAYMENTS = "PAYMENTS"
    PAYMENT_BATCH = "PAYBATCH"
    PAYMENT_BATCHES = "PAYBATCHES"
    ISSUE = "ISSUE"
    AUDIT = "AUDIT"
    IDEMPOTENCY = "IDEMPOTENCY"
    IMPORT = "IMPORT"
    SCHEDULE = "SCHEDULE"


def join(*parts: object) -> str:
    return SEPARATOR.join(str(p) for p in parts)


def sortable_time(moment: datetime) -> str:
    """UTC with microseconds, the year always four digits: sorts lexicographically in time order.
    (``strftime("%Y")`` does not pad years before 1000 on every platform.)"""
    t = moment.astimezone(UTC)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond:06d}Z"


def sortable_number(value: int, width: int = 12) -> str:
    if value < 0:
        raise ValueError("sortable numbers are non-negative")
    return f"{value:0{width}d}"


def item_key(pk: str, sk: str) -> Key:
    return {PARTITION_KEY: pk, SORT_KEY: sk}


def singleton(prefix: Prefix, ident: str) -> Key:
    """The key of an item that is alone in its partition: ``<PREFIX>#<id>`` / ``<PREFIX>``."""
    return item_key(join(prefix, ident), str(prefix))


# -- members ----------------------------------------------------------------------------------


def member(user_id: str) -> Key:
    return singleton(Prefix.MEMBER, user_id)


def member_partition(user_id: str) -> str:
    """GSI1 partition holding everything that belongs to one member (transfers, orders ...)."""
    return join(Prefix.MEMBER, user_id)


def member_shard(user_id: str) -> int:
    return zlib.crc32(user_id.encode()) % MEMBER_SHARDS


def member_listing(user_id: str) -> Key:
    return {GSI2.partition_key: members_shard_partition(member_shard(user_id)), GSI2.sort_key: user_id}


def members_shard_partition(shard: int) -> str:
    return join(Prefix.MEMBERS, shard)


def email(email_key: str) -> Key:
    return singleton(Prefix.EMAIL, email_key)


def referral_code(code: str) -> Key:
    return singleton(Prefix.REFCODE, code)


# -- ledger -----------------------------------------------------------------------------------


def transfer(transfer_id: str) -> Key:
    return singleton(Prefix.TRANSFER, transfer_id)


def transfer_history(member_id: str, member_version: int, index: int) -> Key:
    """Newest-first history: the member's version after the save, then the posting's position."""
    return {
        GSI1.partition_key: member_partition(member_id),
        GSI1.sort_key: join(Prefix.TRANSFER, sortable_number(member_version), sortable_number(index, 4)),
    }


# -- orders -----------------------------------------------------------------------------------


def order(order_id: str) -> Key:
    return singleton(Prefix.ORDER, order_id)


def short_digest(text: str) -> str:
    """Ten base32 characters of SHA-256: a compact, stable tie-breaker for client-chosen ids."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()[:10]).decode().rstrip("=").lower()[:10]


def order_position(created_at: datetime, order_id: str) -> str:
    """Creation time, then a digest of the id: unique, time-ordered, and short enough for a cursor."""
    return join(sortable_time(created_at), short_digest(order_id))


def order_indexes(user_id: str, created_at: datetime, order_id: str) -> Key:
    position = order_position(created_at, order_id)
    return {
        GSI1.partition_key: member_partition(user_id),
        GSI1.sort_key: join(Prefix.ORDER, position),
        GSI2.partition_key: str(Prefix.ORDERS),
        GSI2.sort_key: position,
    }


# -- notifications ----------------------------------------------------------------------------


def notification(dedupe_key: str) -> Key:
    return singleton(Prefix.NOTIFICATION, dedupe_key)


def notification_indexes(user_id: str, notification_id: str) -> Key:
    return {
        GSI1.partition_key: member_partition(user_id),
        GSI1.sort_key: join(Prefix.NOTIFICATION, notification_id),
        GSI2.partition_key: str(Prefix.NOTIFICATIONS),
        GSI2.sort_key: notification_id,
    }


# -- outbox -----------------------------------------------------------------------------------


def outbox_message(message_id: int) -> Key:
    return singleton(Prefix.OUTBOX, str(message_id))


def outbox_status(status: str, order_key: str) -> Key:
    """GSI2 entry of a pending or dead message, ordered by due time (pending) or creation (dead)."""
    return {GSI2.partition_key: join(Prefix.OUTBOX, status), GSI2.sort_key: order_key}


def queued_send(send_id: str) -> Key:
    """Messages for an SQS queue, written with the unit of work and forwarded by the stream."""
    return singleton(Prefix.QUEUE, send_id)


# -- campaigns and running account totals ----------------------------------------------------


def campaign(campaign_id: str) -> Key:
    return singleton(Prefix.CAMPAIGN, campaign_id)


def campaign_indexes(occasion: str, created_at: datetime, campaign_id: str) -> Key:
    position = join(sortable_time(created_at), short_digest(campaign_id))
    return {
        GSI1.partition_key: str(Prefix.CAMPAIGNS),
        GSI1.sort_key: position,
        GSI2.partition_key: join(Prefix.CAMPAIGNS, occasion),
        GSI2.sort_key: position,
    }


def account_total(account: str) -> Key:
    """The running total of a ledger account that needs one (a campaign's budget)."""
    return item_key(join(Prefix.ACCOUNT, account), "TOTAL")


def account_member_total(account: str, member_id: str) -> Key:
    """The part of that total paid to one member (per-member budgets)."""
    return item_key(join(Prefix.ACCOUNT, account), join(Prefix.MEMBER, member_id))


# -- webhooks -----------------------------------------------------------------------------------


def webhook_event(provider: str, event_id: str) -> Key:
    # The provider's length keeps the pair unambiguous whatever the event id contains.
    return item_key(join(Prefix.WEBHOOK_EVENT, len(provider), provider, event_id), str(Prefix.WEBHOOK_EVENT))


def endpoint(endpoint_id: str) -> Key:
    return singleton(Prefix.ENDPOINT, endpoint_id)


def endpoint_listing(created_at: datetime, endpoint_id: str) -> Key:
    return {
        GSI1.partition_key: str(Prefix.ENDPOINTS),
        GSI1.sort_key: join(sortable_time(created_at), short_digest(endpoint_id)),
    }


def delivery(delivery_id: str) -> Key:
    return singleton(Prefix.DELIVERY, delivery_id)


def delivery_claim(endpoint_id: str, event_id: str) -> Key:
    """One delivery per (endpoint, event): the claim item holds the delivery's id."""
    return item_key(join(Prefix.DELIVERY_KEY, len(endpoint_id), endpoint_id, event_id), str(Prefix.DELIVERY_KEY))


def delivery_listing(endpoint_id: str, created_at: datetime, delivery_id: str) -> Key:
    return {
        GSI1.partition_key: join(Prefix.ENDPOINT, endpoint_id),
        GSI1.sort_key: join(Prefix.DELIVERY, sortable_time(created_at), short_digest(delivery_id)),
    }


def due_listing(kind: Prefix, due: datetime, ident: str) -> Key:
    """GSI2 entry of something waiting for a worker, ordered by when it is due."""
    return {GSI2.partition_key: join(kind, "due"), GSI2.sort_key: join(sortable_time(due), ident)}


# -- notification channels --------------------------------------------------------------------


def preferences(user_id: str) -> Key:
    return singleton(Prefix.PREFERENCES, user_id)


def channel_send(send_id: int) -> Key:
    return singleton(Prefix.SEND, str(send_id))


def sends_of(notification_id: str, dedupe_key: str) -> Key:
    return {GSI1.partition_key: join(Prefix.SENDS, notification_id), GSI1.sort_key: dedupe_key}


def notification_queue(notification_id: str) -> Key:
    """A stored notification not yet planned into channel sends."""
    return singleton(Prefix.NOTIFY_QUEUE, notification_id)


def notification_queue_listing(notification_id: str) -> Key:
    return {GSI1.partition_key: str(Prefix.NOTIFY_QUEUE), GSI1.sort_key: notification_id}


# -- referrals and payouts ------------------------------------------------------------------


def email_identity_listing(identity: str, user_id: str) -> Key:
    """GSI1 entry of a member: found by the mailbox its email delivers to (aliases compare equal)."""
    return {GSI1.partition_key: join(Prefix.IDENTITY, identity), GSI1.sort_key: user_id}


def referral(referral_id: str) -> Key:
    return singleton(Prefix.REFERRAL, referral_id)


def referred(member_id: str) -> Key:
    """A member is referred once: this item is the claim."""
    return singleton(Prefix.REFERRED, member_id)


def referral_position(created_at: datetime, referral_id: str) -> str:
    return join(sortable_time(created_at), short_digest(referral_id))


def referral_of_referrer(referrer_id: str, created_at: datetime, referral_id: str) -> Key:
    return {
        GSI1.partition_key: member_partition(referrer_id),
        GSI1.sort_key: join(Prefix.REFERRAL, referral_position(created_at, referral_id)),
    }


def referral_waiting(state: str, created_at: datetime, referral_id: str) -> Key:
    """GSI2 entry of a reward waiting for something: ``held`` (a review) or ``unclaimed`` (a run)."""
    return {
        GSI2.partition_key: join(Prefix.REFERRALS, state),
        GSI2.sort_key: referral_position(created_at, referral_id),
    }


def payout_run(run_id: str) -> Key:
    return singleton(Prefix.PAYOUT_RUN, run_id)


def payout_run_listing(month: str) -> Key:
    return {GSI1.partition_key: str(Prefix.PAYOUT_RUNS), GSI1.sort_key: month}


def payout_claim(run_id: str, referrer_id: str, referral_id: str) -> Key:
    """A reward claimed by a run, in the run's partition ordered by referrer (the report's order)."""
    return item_key(join(Prefix.PAYOUT, run_id), join(Prefix.CLAIM, referrer_id, referral_id))


# -- payments -----------------------------------------------------------------------------------


def payment(payment_id: str) -> Key:
    return singleton(Prefix.PAYMENT, payment_id)


def payment_position(created_at: datetime, payment_id: str) -> str:
    return join(sortable_time(created_at), short_digest(payment_id))


def payment_indexes(status: str, created_at: datetime, payment_id: str, batch_id: str | None, line: int | None) -> Key:
    """GSI1: newest first per status (the entry moves with the status); GSI2: a batch's rows by line."""
    found = {
        GSI1.partition_key: join(Prefix.PAYMENTS, status),
        GSI1.sort_key: payment_position(created_at, payment_id),
    }
    if batch_id is not None and line is not None:
        found.update({GSI2.partition_key: join(Prefix.PAYMENT_BATCH, batch_id), GSI2.sort_key: sortable_number(line)})
    return found


def payment_batch(batch_id: str) -> Key:
    return item_key(join(Prefix.PAYMENT_BATCH, batch_id), "BATCH")


UNFINISHED_BATCHES = join(Prefix.PAYMENT_BATCHES, "processing")


def unfinished_batch(created_at: datetime, batch_id: str) -> Key:
    return {
        GSI2.partition_key: UNFINISHED_BATCHES,
        GSI2.sort_key: join(sortable_time(created_at), batch_id),
    }


def batch_issue(batch_id: str, line: int) -> Key:
    return item_key(join(Prefix.PAYMENT_BATCH, batch_id), join(Prefix.ISSUE, sortable_number(line)))


AUDIT_PARTITION = str(Prefix.AUDIT)


def audit_head() -> Key:
    """The end of the hash chain: every append moves it, guarded by the sequence number it saw."""
    return item_key(AUDIT_PARTITION, "HEAD")


def audit_entry(seq: int) -> Key:
    return item_key(AUDIT_PARTITION, join("SEQ", sortable_number(seq)))


def audit_subject(subject_type: str, subject_id: str, seq: int) -> Key:
    return {
        GSI1.partition_key: join(Prefix.AUDIT, subject_type, subject_id),
        GSI1.sort_key: sortable_number(seq),
    }


# -- the rest ---------------------------------------------------------------------------------


def idempotency(scope: str, key: str) -> Key:
    # The scope's length keeps the pair unambiguous when either part contains the separator.
    return item_key(join(Prefix.IDEMPOTENCY, len(scope), scope, key), str(Prefix.IDEMPOTENCY))


def point_import(file_sha256: str) -> Key:
    return singleton(Prefix.IMPORT, file_sha256)


def schedule_run(name: str) -> Key:
    return singleton(Prefix.SCHEDULE, name)
