"""Repositories of the features built on the core (webhooks, notification channels, referrals and
payouts, payments and the audit chain, campaigns), identical on SQLite and DynamoDB."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from accrue.domain.audit import GENESIS_HASH, AuditRecord
from accrue.domain.campaigns import Budget, Campaign, CampaignType, Occasion
from accrue.domain.errors import ConcurrencyConflict, Conflict
from accrue.domain.ledger import Reason
from accrue.domain.notification_channels import Channel, PlannedSend, Preferences, SendStatus
from accrue.domain.payments import BatchRowIssue, BatchStatus, Payment, PaymentBatch, PaymentRow, PaymentStatus
from accrue.domain.payouts import Month, PayoutRun, RunPhase, RunStatus
from accrue.domain.referrals import Referral, RewardStatus
from accrue.domain.webhooks import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    EndpointStatus,
    InboundStatus,
    ReceivedWebhook,
    WebhookEndpoint,
)
from tests.contract.conftest import NOW, Backend
from tests.contract.test_core_repositories import enrol, notification

# -- notification channels --------------------------------------------------------------------


def test_preferences_default_to_every_channel_and_are_replaced_whole(backend: Backend) -> None:
    enrol(backend, "ada")
    with backend.uow() as uow:
        assert uow.notification_preferences.get("ada") == Preferences(user_id="ada")
        uow.notification_preferences.put(Preferences("ada", email=True, sms=False, push=False, updated_at=NOW))
        uow.commit()
    with backend.uow(readonly=True) as uow:
        assert uow.notification_preferences.get("ada") == Preferences("ada", True, False, False, NOW)


def test_a_stored_notification_is_queued_planned_once_claimed_and_finished(backend: Backend) -> None:
    enrol(backend, "ada")
    with backend.uow() as uow:
        uow.notifications.add(notification(1), "evt_1:tier_upgrade")
        uow.commit()
    with backend.uow() as uow:
        (queued,) = uow.notification_sends.queued(10)
        assert queued.dedupe_key == "evt_1:tier_upgrade" and queued.notification == notification(1)
        sends = [
            PlannedSend("evt_1:tier_upgrade:email", Channel.EMAIL, SendStatus.PENDING),
            PlannedSend("evt_1:tier_upgrade:sms", Channel.SMS, SendStatus.SKIPPED, "no sms address"),
            PlannedSend("evt_1:tier_upgrade:push", Channel.PUSH, SendStatus.PENDING),
        ]
        uow.notification_sends.plan(queued.notification, sends, NOW)
        uow.commit()
    with backend.uow() as uow:
        assert uow.notification_sends.queued(10) == []
        claimed = uow.notification_sends.claim_due(NOW + timedelta(seconds=1), 10)
        uow.commit()
    assert sorted((c.channel, c.attempts) for c in claimed) == [(Channel.EMAIL, 1), (Channel.PUSH, 1)]
    email = next(c for c in claimed if c.channel is Channel.EMAIL)
    push = next(c for c in claimed if c.channel is Channel.PUSH)
    with backend.uow() as uow:
        assert uow.notification_sends.claim_due(NOW + timedelta(seconds=2), 10) == []
        uow.notification_sends.finish(email.send_id, SendStatus.SENT, NOW)
        uow.notification_sends.finish(
            push.send_id, SendStatus.PENDING, NOW, reason="timeout", retry_at=NOW + timedelta(minutes=1)
        )
        uow.commit()
    with backend.uow() as uow:
        assert uow.notification_sends.claim_due(NOW + timedelta(seconds=30), 10) == []
        (retry,) = uow.notification_sends.claim_due(NOW + timedelta(minutes=2), 10)
        uow.commit()
        records = uow.notification_sends.for_notification(queued.notification.notification_id)
    assert (retry.channel, retry.attempts) == (Channel.PUSH, 2)
    assert [(r.channel, r.status, r.attempts) for r in records] == [
        (Channel.EMAIL, SendStatus.SENT, 1),
        (Channel.SMS, SendStatus.SKIPPED, 0),
        (Channel.PUSH, SendStatus.SENDING, 2),
    ]


def test_a_notification_stored_unqueued_is_planned_by_its_storer_in_the_same_transaction(backend: Backend) -> None:
    enrol(backend, "ada")
    sends = [PlannedSend("evt_1:tier_upgrade:push", Channel.PUSH, SendStatus.SENT, attempts=1)]
    with backend.uow() as uow:
        assert uow.notifications.add(notification(1), "evt_1:tier_upgrade", queue=False)
        uow.notification_sends.plan(notification(1), sends, NOW)
        uow.commit()
    with backend.uow() as uow:
        assert uow.notification_sends.queued(10) == []  # never queued
        assert not uow.notifications.add(notification(1), "evt_1:tier_upgrade")  # stored once
        uow.commit()
        assert uow.notification_sends.queued(10) == []
        records = uow.notification_sends.for_notification(notification(1).notification_id)
    assert [(r.channel, r.status, r.attempts) for r in records] == [(Channel.PUSH, SendStatus.SENT, 1)]


def test_sends_recorded_with_their_first_attempt_keep_its_outcome_and_a_retry_waits_until_due(
    backend: Backend,
) -> None:
    enrol(backend, "ada")
    with backend.uow() as uow:
        uow.notifications.add(notification(1), "evt_1:tier_upgrade")
        uow.commit()
    retry_at = NOW + timedelta(minutes=1)
    with backend.uow() as uow:
        (queued,) = uow.notification_sends.queued(10)
        sends = [
            PlannedSend("evt_1:tier_upgrade:email", Channel.EMAIL, SendStatus.SENT, attempts=1),
            PlannedSend("evt_1:tier_upgrade:sms", Channel.SMS, SendStatus.FAILED, "refused", attempts=1),
            PlannedSend("evt_1:tier_upgrade:push", Channel.PUSH, SendStatus.PENDING, "timeout", 1, retry_at),
        ]
        uow.notification_sends.plan(queued.notification, sends, NOW)
        uow.commit()
    with backend.uow() as uow:
        assert uow.notification_sends.queued(10) == []
        assert uow.notification_sends.claim_due(NOW + timedelta(seconds=30), 10) == []
        (retry,) = uow.notification_sends.claim_due(retry_at + timedelta(seconds=1), 10)
        uow.commit()
        records = uow.notification_sends.for_notification(queued.notification.notification_id)
    assert (retry.channel, retry.attempts) == (Channel.PUSH, 2)
    assert [(r.channel, r.status, r.attempts, r.reason) for r in records] == [
        (Channel.EMAIL, SendStatus.SENT, 1, None),
        (Channel.SMS, SendStatus.FAILED, 1, "refused"),
        (Channel.PUSH, SendStatus.SENDING, 2, "timeout"),
    ]


# -- webhooks -----------------------------------------------------------------------------------


def received(event_id: str, member: str | None = "ada") -> ReceivedWebhook:
    return ReceivedWebhook(
        "stripe",
        event_id,
        "charge.succeeded",
        InboundStatus.APPLIED,
        NOW,
        member,
        "ord-1",
        f"webhooks/stripe/{event_id}.json" if member else None,
    )


def test_an_inbound_event_is_recorded_once_and_forgotten_for_its_member(backend: Backend) -> None:
    with backend.uow() as uow:
        assert uow.webhook_events.record(received("evt_1")) is True
        assert uow.webhook_events.record(received("evt_2", None)) is True
        uow.commit()
    with backend.uow() as uow:
        assert uow.webhook_events.seen("stripe", "evt_1") and not uow.webhook_events.seen("shopify", "evt_1")
        assert uow.webhook_events.record(received("evt_1")) is False
        assert uow.webhook_events.for_member("ada") == [received("evt_1")]
        assert uow.webhook_events.forget_member("ada") == ["webhooks/stripe/evt_1.json"]
        uow.commit()
    with backend.uow(readonly=True) as uow:
        assert uow.webhook_events.for_member("ada") == []
        assert uow.webhook_events.seen("stripe", "evt_1")


def endpoint(n: int, types: tuple[str, ...] = ("tier.upgraded",)) -> WebhookEndpoint:
    return WebhookEndpoint(
        f"whe_{n}", f"https://hooks.example.com/{n}", types, f"whsec_{n}", NOW + timedelta(seconds=n)
    )


def test_endpoints_are_paged_newest_first_subscribed_by_type_and_disabled(backend: Backend) -> None:
    with backend.uow() as uow:
        for n in range(3):
            uow.webhook_endpoints.add(endpoint(n, ("tier.upgraded",) if n != 1 else ("points.earned",)))
        uow.commit()
    with backend.uow() as uow:
        first = uow.webhook_endpoints.page(2, None)
        assert [e.endpoint_id for e in first.items] == ["whe_2", "whe_1"] and first.next_cursor
        assert [e.endpoint_id for e in uow.webhook_endpoints.page(2, first.next_cursor).items] == ["whe_0"]
        assert [e.endpoint_id for e in uow.webhook_endpoints.subscribed_to("tier.upgraded")] == ["whe_0", "whe_2"]
        uow.webhook_endpoints.disable("whe_0", "410 Gone", NOW)
        uow.commit()
    with backend.uow(readonly=True) as uow:
        assert [e.endpoint_id for e in uow.webhook_endpoints.subscribed_to("tier.upgraded")] == ["whe_2"]
        gone = uow.webhook_endpoints.get("whe_0")
    assert gone is not None and (gone.status, gone.disabled_reason) == (EndpointStatus.DISABLED, "410 Gone")


def delivery(n: int, event: str = "evt_1") -> Delivery:
    return Delivery(
        f"whd_{n}",
        "whe_0",
        event,
        "tier.upgraded",
        '{"userId":"ada"}',
        DeliveryStatus.PENDING,
        0,
        NOW,
        NOW + timedelta(seconds=n),
        member_id="ada",
    )


def test_a_delivery_is_queued_once_per_event_leased_retried_and_logged(backend: Backend) -> None:
    with backend.uow() as uow:
        uow.webhook_endpoints.add(endpoint(0))
        assert uow.webhook_deliveries.add(delivery(1)) is True
        uow.commit()
    with backend.uow() as uow:
        assert uow.webhook_deliveries.add(delivery(2)) is False
        (leased,) = uow.webhook_deliveries.claim_due(NOW + timedelta(seconds=5), 10, 60)
        uow.commit()
    with backend.uow() as uow:
        assert uow.webhook_deliveries.claim_due(NOW + timedelta(seconds=10), 10, 60) == []
        attempt = DeliveryAttempt(1, NOW + timedelta(seconds=5), 503, "Service Unavailable", 12)
        uow.webhook_deliveries.record_attempt(
            leased.delivery_id, attempt, DeliveryStatus.PENDING, NOW + timedelta(minutes=5)
        )
        uow.commit()
    with backend.uow() as uow:
        (again,) = uow.webhook_deliveries.claim_due(NOW + timedelta(minutes=6), 10, 60)
        done = DeliveryAttempt(2, NOW + timedelta(minutes=6), 200, None, 8)
        uow.webhook_deliveries.record_attempt(again.delivery_id, done, DeliveryStatus.SUCCEEDED, None)
        uow.commit()
    with backend.uow(readonly=True) as uow:
        stored = uow.webhook_deliveries.get("whd_1")
        page = uow.webhook_deliveries.list_for_endpoint("whe_0", 10, None)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.last_status_code, stored.next_attempt_at) == (
        DeliveryStatus.SUCCEEDED,
        2,
        200,
        None,
    )
    assert [a.status_code for a in stored.attempt_log] == [503, 200]
    assert [d.delivery_id for d in page.items] == ["whd_1"]


def test_pending_deliveries_of_a_disabled_endpoint_fail_and_payloads_naming_a_member_are_erased(
    backend: Backend,
) -> None:
    with backend.uow() as uow:
        uow.webhook_endpoints.add(endpoint(0))
        uow.webhook_deliveries.add(delivery(1, "evt_1"))
        uow.webhook_deliveries.add(delivery(2, "evt_2"))
        uow.commit()
    with backend.uow() as uow:
        assert uow.webhook_deliveries.fail_pending("whe_0", "endpoint disabled", NOW) == 2
        assert uow.webhook_deliveries.forget_member("ada") == 2
        uow.commit()
    with backend.uow() as uow:
        stored = uow.webhook_deliveries.get("whd_2")
        assert uow.webhook_deliveries.claim_due(NOW + timedelta(days=1), 10, 60) == []
    assert stored is not None and stored.status is DeliveryStatus.FAILED and "ada" not in stored.payload


# -- referrals and payouts ----------------------------------------------------------------------


def referral(
    n: int, referrer: str = "ref", status: RewardStatus = RewardStatus.PENDING, *, at: datetime = NOW
) -> Referral:
    return Referral(f"rfl_{n:03d}", referrer, f"friend-{n}", "REFCODE1", n, 1000, status, at + timedelta(seconds=n))


def test_referral_counters_move_with_their_commit_and_a_member_is_referred_once(backend: Backend) -> None:
    enrol(backend, "ref", "ref@example.com")
    for n in (1, 2):
        enrol(backend, f"friend-{n}")
    with backend.uow() as uow:
        assert uow.referrals.increment_referral_count("ref") == 1
        assert uow.referrals.add_to_total_rewards("ref", 1000) == 1000
        uow.referrals.add(referral(1))
        uow.commit()
    with pytest.raises(Conflict) as twice, backend.uow() as uow:
        uow.referrals.add(Referral("rfl_x", "ref", "friend-1", "REFCODE1", 2, 1000, RewardStatus.PENDING, NOW))
        uow.commit()
    assert twice.value.details["field"] == "userId"
    with backend.uow(readonly=True) as uow:
        summary = uow.referrals.summary("ref")
        assert uow.referrals.member_with_email_identity("ref@example.com") == "ref"
        assert uow.referrals.count_since("ref", NOW - timedelta(minutes=1)) == 1
        assert uow.referrals.count_since("ref", NOW + timedelta(minutes=1)) == 0
    assert summary is not None
    assert (summary.referral_count, summary.total_rewards_cents, summary.pending_cents) == (1, 1000, 1000)


def test_a_held_reward_is_listed_until_reviewed_and_a_stale_review_is_refused(backend: Backend) -> None:
    enrol(backend, "ref")
    enrol(backend, "friend-1")
    with backend.uow() as uow:
        uow.referrals.add(referral(1, status=RewardStatus.HELD))
        uow.commit()
    with backend.uow() as uow:
        assert [r.referral_id for r in uow.referrals.list_held(10, None).items] == ["rfl_001"]
        held = uow.referrals.get("rfl_001")
        assert held is not None
        held.approve(by="admin", now=NOW)
        uow.referrals.save_review(held, RewardStatus.HELD)
        uow.commit()
    with pytest.raises(ConcurrencyConflict), backend.uow() as uow:
        uow.referrals.save_review(held, RewardStatus.HELD)
        uow.commit()
    with backend.uow(readonly=True) as uow:
        assert uow.referrals.list_held(10, None).items == []
        approved = uow.referrals.get("rfl_001")
    assert approved is not None and approved.status is RewardStatus.PENDING


def test_a_payout_run_claims_reports_marks_and_completes_once(backend: Backend) -> None:
    for user in ("ref", "ref2", *[f"friend-{n}" for n in range(1, 8)]):
        enrol(backend, user)
    month = Month.of(NOW)
    with backend.uow() as uow:
        for n in range(1, 7):
            uow.referrals.add(referral(n, "ref" if n % 2 else "ref2"))
        uow.referrals.add(referral(7, "ref", at=month.next().start))  # next month: not this run's
        uow.commit()
    run = PayoutRun.new(month, NOW + timedelta(days=40))
    with backend.uow() as uow:
        started = uow.payouts.start_run(run)
        uow.commit()
    assert (started.status, started.phase, started.attempts) == (RunStatus.RUNNING, RunPhase.ASSIGNING, 1)
    with backend.uow() as uow:
        assert uow.payouts.assign_chunk(run.run_id, run.cutoff, 4) == 4
        uow.commit()
    with backend.uow() as uow:
        assert uow.payouts.assign_chunk(run.run_id, run.cutoff, 4) == 2
        uow.payouts.finish_assigning(run.run_id, NOW)
        uow.commit()
    with backend.uow() as uow:
        assert uow.payouts.assign_chunk(run.run_id, run.cutoff, 4) == 0
        lines = list(uow.payouts.iter_lines(run.run_id))
        uow.payouts.record_report(run.run_id, "payouts/r.csv", "loc", 2, 6, 6000, NOW)
        uow.commit()
    assert [(line.referrer_id, line.total_cents, line.count) for line in lines] == [("ref", 3000, 3), ("ref2", 3000, 3)]
    with backend.uow() as uow:
        assert uow.payouts.mark_paid_chunk(run.run_id, NOW, 5) == 5
        uow.commit()
    with backend.uow() as uow:
        assert uow.payouts.mark_paid_chunk(run.run_id, NOW, 5) == 1
        assert uow.payouts.complete(run.run_id, NOW) is True
        uow.commit()
    with backend.uow() as uow:
        assert uow.payouts.complete(run.run_id, NOW) is False
        again = uow.payouts.start_run(PayoutRun.new(month, NOW + timedelta(days=41)))
        runs = uow.payouts.list_runs(10, None)
        later = uow.referrals.get("rfl_007")
        summary = uow.referrals.summary("ref")
    assert (again.status, again.phase, again.report_key, again.total_cents) == (
        RunStatus.COMPLETED,
        RunPhase.DONE,
        "payouts/r.csv",
        6000,
    )
    assert [str(r.month) for r in runs.items] == [str(month)]
    assert later is not None and later.status is RewardStatus.PENDING and later.payout_run_id is None
    assert summary is not None and (summary.paid_cents, summary.pending_cents) == (3000, 1000)


# -- payments, batches and the audit chain ----------------------------------------------------


def payment(payment_id: str, minute: int = 0, status: PaymentStatus = PaymentStatus.PENDING) -> Payment:
    at = NOW + timedelta(minutes=minute)
    return Payment(payment_id, 1234, "USD", status, at, at, workflow_step="ValidatePayment")


def batch(batch_id: str = "b" * 64) -> PaymentBatch:
    return PaymentBatch(
        batch_id, BatchStatus.PROCESSING, "api", "f.csv", f"payments/batches/{batch_id}.csv", 100, "admin", NOW, NOW
    )


def test_a_payment_is_added_once_saved_under_its_version_and_listed_by_status(backend: Backend) -> None:
    with backend.uow() as uow:
        for n in range(4):
            uow.payments.add(payment(f"pay-{n}", n))
        uow.commit()
    with pytest.raises(Conflict), backend.uow() as uow:
        uow.payments.add(payment("pay-0"))
        uow.commit()
    with backend.uow(readonly=True) as uow:
        stale = uow.payments.get("pay-1")
    with backend.uow() as uow:
        fresh = uow.payments.get("pay-1")
        assert fresh is not None
        fresh.move_to(PaymentStatus.PROCESSING, NOW)
        uow.payments.save(fresh)
        uow.commit()
    assert stale is not None
    with pytest.raises(ConcurrencyConflict), backend.uow() as uow:
        uow.payments.save(stale)
        uow.commit()
    with backend.uow(readonly=True) as uow:
        everyone = uow.payments.list(None, None, None, 3, None)
        rest = uow.payments.list(None, None, None, 3, everyone.next_cursor)
        pending = uow.payments.list(PaymentStatus.PENDING, None, None, 10, None)
        window = uow.payments.list(None, NOW + timedelta(minutes=1), NOW + timedelta(minutes=3), 10, None)
        assert uow.payments.count_by_status() == {"pending": 3, "processing": 1}
    assert [p.payment_id for p in everyone.items] == ["pay-3", "pay-2", "pay-1"]
    assert [p.payment_id for p in rest.items] == ["pay-0"] and rest.next_cursor is None
    assert [p.payment_id for p in pending.items] == ["pay-3", "pay-2", "pay-0"]
    assert [p.payment_id for p in window.items] == ["pay-2", "pay-1"]


def test_batch_rows_skip_taken_ids_but_not_a_rerun_of_their_own_lines(backend: Backend) -> None:
    with backend.uow() as uow:
        uow.payments.add(payment("pay-old"))
        assert uow.payment_batches.add(batch()) is True
        uow.commit()
    rows = [
        PaymentRow(2, "pay-a", 100, "USD", None),
        PaymentRow(3, "pay-old", 100, "USD", None),
        PaymentRow(4, "pay-a", 100, "USD", None),
        PaymentRow(5, "pay-b", 250, "EUR", None),
    ]
    with backend.uow() as uow:
        skipped = uow.payments.add_batch_rows(rows, batch_id="b" * 64, now=NOW, workflow_step="ValidatePayment")
        uow.commit()
    assert skipped == {3: (None, None), 4: ("b" * 64, 2)}
    with backend.uow() as uow:
        # The same chunk again (a resumed ingestion): its own rows are not duplicates of themselves.
        again = uow.payments.add_batch_rows(rows, batch_id="b" * 64, now=NOW, workflow_step="ValidatePayment")
        uow.commit()
        stored = uow.payments.batch_rows("b" * 64, 1, 10)
        counts = uow.payments.count_by_status("b" * 64)
    assert again == skipped
    assert stored == [PaymentRow(2, "pay-a", 100, "USD", None), PaymentRow(5, "pay-b", 250, "EUR", None)]
    assert counts == {"pending": 2}


def test_a_batch_advances_only_from_the_offset_it_was_read_at_and_keeps_its_issues(backend: Backend) -> None:
    with backend.uow() as uow:
        uow.payment_batches.add(batch())
        assert uow.payment_batches.add(batch()) is False
        uow.commit()
    moved = batch()
    moved.byte_offset, moved.line_number = 500, 10
    moved.total_rows, moved.accepted_rows, moved.rejected_rows, moved.duplicate_rows = 9, 7, 1, 1
    with backend.uow() as uow:
        assert uow.payment_batches.advance(moved, 0) is True
        uow.payment_batches.add_issues(
            "b" * 64, [BatchRowIssue(3, "invalid", "amount: must be positive"), BatchRowIssue(7, "duplicate", "x")]
        )
        uow.commit()
    with backend.uow() as uow:
        assert uow.payment_batches.advance(moved, 0) is False
        assert uow.payment_batches.unfinished() == ["b" * 64]
        moved.status = BatchStatus.COMPLETED
        assert uow.payment_batches.advance(moved, 500) is True
        uow.commit()
    with backend.uow(readonly=True) as uow:
        assert uow.payment_batches.unfinished() == []
        first = uow.payment_batches.issues("b" * 64, None, 1, None)
        second = uow.payment_batches.issues("b" * 64, None, 1, first.next_cursor)
        invalid = uow.payment_batches.issues("b" * 64, "invalid", 10, None)
        stored = uow.payment_batches.get("b" * 64)
    assert [i.line for i in first.items] == [3] and [i.line for i in second.items] == [7]
    assert [i.kind for i in invalid.items] == ["invalid"]
    assert stored is not None and (stored.status, stored.byte_offset, stored.total_rows) == (
        BatchStatus.COMPLETED,
        500,
        9,
    )


def test_the_audit_log_is_one_hash_chain_in_order_and_per_subject(backend: Backend) -> None:
    def record(action: str, subject: str) -> AuditRecord:
        return AuditRecord("admin", action, "payment", subject, NOW, {"n": action})

    with backend.uow() as uow:
        first = uow.audit.append([record("created", "p1"), record("created", "p2")])
        uow.commit()
    with backend.uow() as uow:
        second = uow.audit.append([record("processed", "p1")])
        uow.commit()
    assert [e.seq for e in first + second] == [1, 2, 3]
    assert first[0].prev_hash == GENESIS_HASH
    assert second[0].prev_hash == first[-1].hash
    with backend.uow(readonly=True) as uow:
        chain = list(uow.audit.iter_all(batch_size=2))
        p1 = uow.audit.for_subject("payment", "p1", 10, None)
    assert chain == first + second
    assert [e.action for e in p1.items] == ["created", "processed"]


# -- campaigns ----------------------------------------------------------------------------------


def campaign(n: int, **changes: object) -> Campaign:
    values: dict[str, object] = {
        "campaign_id": f"cmp_{n}",
        "name": f"Bonus {n}",
        "type": CampaignType.SIGNUP_BONUS,
        "created_at": NOW + timedelta(seconds=n),
        "points": 50,
        "starts_at": NOW - timedelta(days=1),
        "ends_at": NOW + timedelta(days=1),
        "budget": Budget(total_points=100, per_member_points=60),
    }
    values.update(changes)
    return Campaign(**values)  # type: ignore[arg-type]


def test_campaigns_run_in_their_window_and_count_what_their_budget_paid(backend: Backend) -> None:
    enrol(backend, "ada")
    with backend.uow() as uow:
        uow.campaigns.add(campaign(1))
        uow.campaigns.add(campaign(2, starts_at=NOW + timedelta(hours=1)))
        uow.commit()
    with pytest.raises(Conflict), backend.uow() as uow:
        uow.campaigns.add(campaign(1))
        uow.commit()
    with backend.uow() as uow:
        assert [c.campaign_id for c in uow.campaigns.running(Occasion.SIGNUP, NOW)] == ["cmp_1"]
        assert uow.campaigns.running(Occasion.PURCHASE, NOW) == []
        assert uow.campaigns.drawn("cmp_1") == 0
        member = uow.members.get("ada")
        assert member is not None
        uow.track(member)
        member.credit(
            transfer_id="campaign:cmp_1:x",
            points=50,
            reason=Reason.CAMPAIGN,
            reference="cmp_1",
            now=NOW,
            source_account="campaign:cmp_1:budget",
        )
        uow.commit()
    with backend.uow() as uow:
        assert uow.campaigns.drawn("cmp_1") == 50
        assert uow.campaigns.drawn("cmp_1", "ada") == 50
        assert uow.campaigns.drawn("cmp_1", "bob") == 0
        assert uow.campaigns.drawn_many(["cmp_1", "cmp_2"]) == {"cmp_1": 50}
        assert uow.campaigns.check() == []
        ended = uow.campaigns.get("cmp_1")
        assert ended is not None
        ended.ended_at = NOW
        uow.campaigns.save(ended)
        uow.commit()
    with backend.uow(readonly=True) as uow:
        assert uow.campaigns.running(Occasion.SIGNUP, NOW + timedelta(seconds=1)) == []
        assert [c.campaign_id for c in uow.campaigns.list(10, None).items] == ["cmp_2", "cmp_1"]
