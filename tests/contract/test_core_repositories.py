"""Repository and unit-of-work behaviour of the loyalty core, identical on SQLite and DynamoDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from accrue.domain import events
from accrue.domain.errors import ConcurrencyConflict, Conflict, InvalidInput
from accrue.domain.ledger import Reason, Transfer, member_account
from accrue.domain.loyalty import Tier
from accrue.domain.notifications import Notification
from accrue.domain.orders import LineItem, Order
from tests.contract.conftest import NOW, Backend, new_member


def enrol(backend: Backend, user_id: str, email: str | None = None, code: str = "") -> None:
    with backend.uow() as uow:
        uow.members.add(new_member(user_id, email, code))
        uow.commit()


def credit(backend: Backend, user_id: str, transfer_id: str, points: int) -> None:
    with backend.uow() as uow:
        member = uow.members.get(user_id)
        assert member is not None
        uow.track(member)
        member.credit(transfer_id=transfer_id, points=points, reason=Reason.EARN, reference="test", now=NOW)
        uow.commit()


# -- members ----------------------------------------------------------------------------------


def test_a_committed_member_reads_back_with_every_field(backend: Backend) -> None:
    enrol(backend, "ada", "Ada@Example.com", "ADA2345X")
    with backend.uow(readonly=True) as uow:
        member = uow.members.get("ada")
        assert uow.members.get("nobody") is None
    assert member is not None
    assert (member.user_id, member.email, member.name, member.referral_code) == (
        "ada",
        "Ada@Example.com",
        "Ada",
        "ADA2345X",
    )
    assert (member.balance, member.lifetime, member.tier, member.erased) == (0, 0, Tier.BRONZE, False)
    assert member.created_at == NOW


def test_a_member_is_found_by_email_ignoring_case_and_by_referral_code(backend: Backend) -> None:
    enrol(backend, "ada", "Ada@Example.com", "ADA2345X")
    with backend.uow(readonly=True) as uow:
        by_email = uow.members.get_by_email("  ada@EXAMPLE.com ")
        by_code = uow.members.get_by_referral_code("ada2345x")
        assert uow.members.get_by_email("bob@example.com") is None
        assert uow.members.get_by_referral_code("NOPE2345") is None
    assert by_email is not None and by_email.user_id == "ada"
    assert by_code is not None and by_code.user_id == "ada"


def test_an_email_belongs_to_one_member_whatever_its_case(backend: Backend) -> None:
    enrol(backend, "ada", "ada@example.com")
    with pytest.raises(Conflict) as refused, backend.uow() as uow:
        uow.members.add(new_member("eve", "ADA@example.com"))
        uow.commit()
    assert refused.value.details["field"] == "email"
    with backend.uow(readonly=True) as uow:
        assert uow.members.get("eve") is None


def test_a_user_id_and_a_referral_code_are_each_taken_once(backend: Backend) -> None:
    enrol(backend, "ada", code="SAME2345")
    with pytest.raises(Conflict) as same_id, backend.uow() as uow:
        uow.members.add(new_member("ada", "other@example.com", "OTHR2345"))
        uow.commit()
    assert same_id.value.details["field"] == "userId"
    with pytest.raises(Conflict) as same_code, backend.uow() as uow:
        uow.members.add(new_member("bob", "bob@example.com", "SAME2345"))
        uow.commit()
    assert same_code.value.details["field"] == "referralCode"
    with backend.uow(readonly=True) as uow:
        assert uow.members.get("bob") is None
        assert uow.members.get_by_email("other@example.com") is None


def test_a_stale_copy_of_a_member_cannot_be_saved_and_writes_nothing(backend: Backend) -> None:
    enrol(backend, "ada")
    with backend.uow(readonly=True) as uow:
        stale = uow.members.get("ada")
    assert stale is not None
    credit(backend, "ada", "fresh-1", 10)
    with pytest.raises(ConcurrencyConflict), backend.uow() as uow:
        uow.track(stale)
        stale.credit(transfer_id="stale-1", points=99, reason=Reason.EARN, reference="test", now=NOW)
        uow.commit()
    with backend.uow(readonly=True) as uow:
        member = uow.members.get("ada")
        assert uow.ledger.get("stale-1") is None
        assert uow.ledger.check() == []
    assert member is not None and member.balance == 10


def test_saving_bumps_the_version_and_persists_balance_tier_and_spend(backend: Backend) -> None:
    enrol(backend, "ada")
    with backend.uow() as uow:
        member = uow.members.get("ada")
        assert member is not None
        uow.track(member)
        member.record_purchase(
            transfer_id="buy-1",
            amount=Decimal("12000.00"),
            transaction_type="purchase",
            reference="order:1",
            now=NOW,
            amount_cents=1_200_000,
        )
        uow.commit()
    with backend.uow(readonly=True) as uow:
        saved = uow.members.get("ada")
    assert saved is not None
    assert (saved.balance, saved.lifetime, saved.tier, saved.total_spent_cents) == (1200, 1200, Tier.SILVER, 1_200_000)
    assert saved.version == 1


def test_erasing_a_member_frees_the_email_for_someone_else(backend: Backend) -> None:
    enrol(backend, "ada", "ada@example.com")
    with backend.uow() as uow:
        member = uow.members.get("ada")
        assert member is not None
        uow.track(member)
        member.email, member.name, member.erased = None, None, True
        uow.commit()
    with backend.uow(readonly=True) as uow:
        assert uow.members.get_by_email("ada@example.com") is None
        erased = uow.members.get("ada")
    assert erased is not None and erased.erased and erased.email is None and erased.name is None
    enrol(backend, "ada2", "ada@example.com")
    with backend.uow(readonly=True) as uow:
        again = uow.members.get_by_email("ada@example.com")
    assert again is not None and again.user_id == "ada2"


def test_changing_an_email_moves_the_claim(backend: Backend) -> None:
    enrol(backend, "ada", "ada@example.com")
    enrol(backend, "bob", "bob@example.com")
    with backend.uow() as uow:
        member = uow.members.get("ada")
        assert member is not None
        uow.track(member)
        member.email = "ada@new.example.com"
        uow.commit()
    with pytest.raises(Conflict), backend.uow() as uow:
        bob = uow.members.get("bob")
        assert bob is not None
        uow.track(bob)
        bob.email = "ADA@new.example.com"
        uow.commit()
    with backend.uow(readonly=True) as uow:
        moved = uow.members.get_by_email("ada@new.example.com")
        assert uow.members.get_by_email("ada@example.com") is None
        still_bob = uow.members.get_by_email("bob@example.com")
    assert moved is not None and moved.user_id == "ada"
    assert still_bob is not None and still_bob.user_id == "bob"


def test_every_member_is_listed_and_fetched_in_bulk(backend: Backend) -> None:
    ids = [f"user-{n:03d}" for n in range(40)]
    with backend.uow() as uow:
        for user_id in ids:
            uow.members.add(new_member(user_id, code=f"C{int(user_id[-3:]):03d}XXXX"))
        uow.commit()
    with backend.uow(readonly=True) as uow:
        listed = sorted(uow.members.iter_ids(batch_size=7))
        fetched = uow.members.get_many([*ids[:5], "nobody"])
    assert listed == ids
    assert sorted(m.user_id for m in fetched) == ids[:5]


def test_a_member_added_and_credited_in_one_unit_of_work_is_written_once(backend: Backend) -> None:
    with backend.uow() as uow:
        member = new_member("ada")
        uow.members.add(member)
        uow.track(member)
        member.credit(transfer_id="welcome:ada", points=100, reason=Reason.WELCOME_BONUS, reference="w", now=NOW)
        uow.commit()
    with backend.uow(readonly=True) as uow:
        saved = uow.members.get("ada")
        history = uow.ledger.history("ada", 10, None)
        assert uow.ledger.check() == []
    assert saved is not None and saved.balance == 100
    assert [t.transfer_id for t in history.items] == ["welcome:ada"]


# -- ledger -----------------------------------------------------------------------------------


def test_a_transfer_id_is_posted_once_ever_and_a_repeat_changes_nothing(backend: Backend) -> None:
    enrol(backend, "ada")
    credit(backend, "ada", "t-1", 50)
    with pytest.raises(Conflict):
        credit(backend, "ada", "t-1", 50)
    with backend.uow(readonly=True) as uow:
        member = uow.members.get("ada")
        transfer = uow.ledger.get("t-1")
        assert uow.ledger.check() == []
    assert member is not None and member.balance == 50
    assert transfer is not None
    assert (transfer.amount, transfer.reason, transfer.balance_after, transfer.member_delta) == (
        50,
        Reason.EARN,
        50,
        50,
    )
    assert (transfer.debit_account, transfer.credit_account) == ("program:issued", member_account("ada"))


def test_history_is_newest_first_in_pages_that_neither_skip_nor_repeat(backend: Backend) -> None:
    enrol(backend, "ada")
    enrol(backend, "bob")
    for n in range(5):
        credit(backend, "ada", f"t-{n}", n + 1)
    credit(backend, "bob", "bob-1", 7)
    with backend.uow() as uow:
        member = uow.members.get("ada")
        assert member is not None
        uow.track(member)
        member.credit(transfer_id="t-5", points=6, reason=Reason.EARN, reference="x", now=NOW)
        member.redeem(transfer_id="t-6", points=3, reference="y", now=NOW)
        uow.commit()
    seen: list[str] = []
    cursor = None
    pages = 0
    with backend.uow(readonly=True) as uow:
        while True:
            page = uow.ledger.history("ada", 3, cursor)
            seen.extend(t.transfer_id for t in page.items)
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
    assert seen == ["t-6", "t-5", "t-4", "t-3", "t-2", "t-1", "t-0"]
    assert pages == 3


def test_a_cursor_outside_the_token_alphabet_is_refused_naming_the_field(backend: Backend) -> None:
    with backend.uow(readonly=True) as uow, pytest.raises(InvalidInput) as refused:
        uow.ledger.history("ada", 10, "zz!z")
    assert refused.value.field == "cursor"


@pytest.mark.parametrize("cursor", ["A", "zzzz", "AAAAAAAAAAAAAAAAAAAA", "_-_-", "MDAwMDAwMDAwMDAw"])
def test_any_token_of_the_alphabet_is_a_position_never_an_error(backend: Backend, cursor: str) -> None:
    enrol(backend, "ada")
    credit(backend, "ada", "t-1", 1)
    with backend.uow(readonly=True) as uow:
        history = uow.ledger.history("ada", 10, cursor)
        orders = uow.orders.list(None, None, 10, cursor)
        notes = uow.notifications.list("ada", 10, cursor)
    assert len(history.items) <= 1 and orders.items == [] and notes.items == []


def test_existing_transfer_ids_are_found_among_many(backend: Backend) -> None:
    enrol(backend, "ada")
    credit(backend, "ada", "t-1", 1)
    credit(backend, "ada", "t-2", 1)
    wanted = ["t-1", "t-2", *[f"missing-{n}" for n in range(150)]]
    with backend.uow(readonly=True) as uow:
        assert uow.ledger.existing_ids(wanted) == {"t-1", "t-2"}


def test_appended_transfers_keep_the_ledger_and_history_in_order(backend: Backend) -> None:
    enrol(backend, "ada")
    credit(backend, "ada", "t-1", 10)
    later = datetime(2026, 3, 15, tzinfo=UTC)
    with backend.uow() as uow:
        uow.ledger.append_many(
            [
                Transfer(
                    transfer_id="bulk-1",
                    debit_account=member_account("ada"),
                    credit_account="program:redeemed",
                    amount=4,
                    reason=Reason.REDEEM,
                    reference="bulk",
                    member_id="ada",
                    balance_after=6,
                    created_at=later,
                    member_delta=-4,
                )
            ]
        )
        uow.commit()
    with backend.uow(readonly=True) as uow:
        history = uow.ledger.history("ada", 10, None)
        problems = uow.ledger.check()
    assert [t.transfer_id for t in history.items] == ["bulk-1", "t-1"]
    # The stored balance was not moved by the bulk append: the check says so, on both backends.
    assert problems == [
        "member ada: stored balance 10 != sum of postings 6",
        "member ada: stored balance 10 != last resulting balance 6",
    ]


# -- orders -----------------------------------------------------------------------------------


def order(order_id: str, user_id: str, minute: int, status: str = "confirmed") -> Order:
    return Order(
        order_id=order_id,
        user_id=user_id,
        amount=Decimal("12.34"),
        currency="USD",
        amount_minor=1234,
        status=status,
        points_earned=12,
        created_at=NOW + timedelta(minutes=minute),
        items=(LineItem(sku="A-1", quantity=2, price=Decimal("6.17"), category="books"),),
    )


def test_an_order_reads_back_exactly_and_its_id_is_taken_once(backend: Backend) -> None:
    enrol(backend, "ada")
    with backend.uow() as uow:
        assert uow.orders.count_for_user("ada") == 0
        uow.orders.add(order("o-1", "ada", 0))
        uow.commit()
    with pytest.raises(Conflict) as refused, backend.uow() as uow:
        uow.orders.add(order("o-1", "ada", 1))
        uow.commit()
    assert refused.value.details["field"] == "orderId"
    with backend.uow(readonly=True) as uow:
        stored = uow.orders.get("o-1")
        assert uow.orders.get("o-2") is None
        assert uow.orders.count_for_user("ada") == 1
    assert stored == order("o-1", "ada", 0)
    assert isinstance(stored.amount, Decimal) and isinstance(stored.items[0].price, Decimal)


def test_orders_list_newest_first_by_member_and_by_status_in_pages(backend: Backend) -> None:
    enrol(backend, "ada")
    enrol(backend, "bob")
    with backend.uow() as uow:
        for n in range(6):
            uow.orders.add(order(f"ada-{n}", "ada", n, "refunded" if n % 2 else "confirmed"))
        uow.orders.add(order("bob-0", "bob", 10))
        uow.commit()

    def collect(user_id: str | None, status: str | None) -> list[str]:
        found: list[str] = []
        cursor = None
        with backend.uow(readonly=True) as uow:
            while True:
                page = uow.orders.list(user_id, status, 2, cursor)
                found.extend(o.order_id for o in page.items)
                if page.next_cursor is None:
                    return found
                cursor = page.next_cursor

    assert collect("ada", None) == ["ada-5", "ada-4", "ada-3", "ada-2", "ada-1", "ada-0"]
    assert collect("ada", "refunded") == ["ada-5", "ada-3", "ada-1"]
    assert collect(None, None) == ["bob-0", "ada-5", "ada-4", "ada-3", "ada-2", "ada-1", "ada-0"]
    assert collect(None, "confirmed") == ["bob-0", "ada-4", "ada-2", "ada-0"]
    with backend.uow(readonly=True) as uow:
        assert uow.orders.count_for_user("ada") == 6
        assert uow.orders.count_for_user("bob") == 1


# -- notifications ----------------------------------------------------------------------------


def notification(n: int, user_id: str = "ada") -> Notification:
    return Notification(
        notification_id=f"ntf_{n:04d}",
        event_id=f"evt_{n}",
        type="tier_upgrade",
        user_id=user_id,
        subject="You moved up",
        message={"default": "Now SILVER", "email": "<p>Now SILVER</p>", "sms": "SILVER"},
        created_at=NOW + timedelta(seconds=n),
        old_tier="BRONZE",
        new_tier="SILVER",
        milestones=(100, 500),
        data={"points": 1200, "note": "first"},
    )


def test_a_notification_is_stored_once_per_dedupe_key(backend: Backend) -> None:
    enrol(backend, "ada")
    with backend.uow() as uow:
        assert uow.notifications.add(notification(1), "evt_1:tier_upgrade") is True
        uow.commit()
    with backend.uow() as uow:
        assert uow.notifications.add(notification(2), "evt_1:tier_upgrade") is False
        uow.commit()
    with backend.uow(readonly=True) as uow:
        page = uow.notifications.list("ada", 10, None)
    assert page.items == [notification(1)]


def test_notifications_list_newest_first_per_member_and_for_everyone(backend: Backend) -> None:
    enrol(backend, "ada")
    enrol(backend, "bob")
    with backend.uow() as uow:
        for n in range(1, 5):
            uow.notifications.add(notification(n, "ada" if n != 3 else "bob"), f"k{n}")
        uow.commit()
    with backend.uow(readonly=True) as uow:
        first = uow.notifications.list("ada", 2, None)
        assert first.next_cursor is not None
        second = uow.notifications.list("ada", 2, first.next_cursor)
        everyone = uow.notifications.list(None, 10, None)
    assert [n.notification_id for n in first.items] == ["ntf_0004", "ntf_0002"]
    assert [n.notification_id for n in second.items] == ["ntf_0001"] and second.next_cursor is None
    assert [n.notification_id for n in everyone.items] == ["ntf_0004", "ntf_0003", "ntf_0002", "ntf_0001"]


# -- unit of work and outbox ------------------------------------------------------------------


def upgrade(backend: Backend, user_id: str) -> None:
    """A purchase big enough for SILVER: TierUpgraded (2 subscribers) and MilestonesReached (1)."""
    with backend.uow() as uow:
        member = uow.members.get(user_id)
        assert member is not None
        uow.track(member)
        member.record_purchase(
            transfer_id=f"big:{user_id}",
            amount=Decimal("12000"),
            transaction_type="purchase",
            reference="r",
            now=NOW,
        )
        uow.emit(events.UserCreated(user_id=user_id, email="x@example.com"))
        uow.emit(events.PointsRedeemed(user_id=user_id, transfer_id="none", points=1, balance=1))
        uow.commit()


def test_leaving_a_unit_of_work_without_commit_writes_nothing(backend: Backend) -> None:
    with backend.uow() as uow:
        uow.members.add(new_member("ada"))
        uow.emit(events.UserCreated(user_id="ada", email="ada@example.com"))
    with backend.uow(readonly=True) as uow:
        assert uow.members.get("ada") is None
        assert uow.outbox.claim_due(datetime.now(UTC) + timedelta(seconds=1), 10, 0) == []


def test_commit_writes_one_outbox_message_per_subscriber_and_none_without_one(backend: Backend) -> None:
    enrol(backend, "ada")
    upgrade(backend, "ada")
    with backend.uow() as uow:
        claimed = uow.outbox.claim_due(datetime.now(UTC) + timedelta(seconds=1), 50, 60)
        uow.commit()
    pairs = sorted((m.event_name, m.handler) for m in claimed)
    assert pairs == [
        ("MilestonesReached", "notify"),
        ("TierUpgraded", "notify"),
        ("TierUpgraded", "webhook"),
        ("UserCreated", "welcome"),
    ]
    tier = next(m for m in claimed if m.event_name == "TierUpgraded")
    event = events.Event.from_dict(tier.event_name, tier.payload)
    assert isinstance(event, events.TierUpgraded)
    assert (event.user_id, event.old_tier, event.new_tier) == ("ada", "BRONZE", "SILVER")
    assert all(m.status == "pending" and m.attempts == 0 for m in claimed)


def test_a_claimed_message_is_leased_then_done_exactly_with_the_handlers_writes(backend: Backend) -> None:
    enrol(backend, "ada")
    upgrade(backend, "ada")
    now = datetime.now(UTC) + timedelta(seconds=1)
    with backend.uow() as uow:
        claimed = uow.outbox.claim_due(now, 50, 30)
        uow.commit()
    with backend.uow() as uow:
        assert uow.outbox.claim_due(now + timedelta(seconds=10), 50, 30) == []
    target = next(m for m in claimed if m.event_name == "TierUpgraded" and m.handler == "notify")
    # A handler that fails before commit leaves the message pending and writes nothing.
    with pytest.raises(RuntimeError), backend.uow() as uow:
        uow.notifications.add(notification(1), "evt:notify")
        uow.outbox.mark_done(target.message_id)
        raise RuntimeError("handler crashed")
    with backend.uow() as uow:
        uow.notifications.add(notification(1), "evt:notify")
        uow.outbox.mark_done(target.message_id)
        uow.commit()
    with backend.uow() as uow:
        done = uow.outbox.get(target.message_id)
        again = uow.outbox.claim_due(now + timedelta(seconds=31), 50, 30)
        uow.commit()
        assert len(uow.notifications.list("ada", 10, None).items) == 1
    assert done is not None and (done.status, done.attempts) == ("done", 1)
    assert sorted(m.message_id for m in again) == sorted(m.message_id for m in claimed if m is not target)


def test_due_messages_are_read_without_a_lease_earliest_due_first(backend: Backend) -> None:
    enrol(backend, "ada")
    upgrade(backend, "ada")
    now = datetime.now(UTC) + timedelta(seconds=1)
    with backend.uow() as uow:
        due = uow.outbox.due(now, 50)
        uow.rollback()
    assert due and all(m.status == "pending" for m in due)
    # Read, not leased: a second look, and a claim, find the same messages.
    with backend.uow() as uow:
        assert [m.message_id for m in uow.outbox.due(now, 50)] == [m.message_id for m in due]
        claimed = uow.outbox.claim_due(now, 50, 30)
        uow.commit()
    assert sorted(m.message_id for m in claimed) == sorted(m.message_id for m in due)
    # Leased (by a claim), retried later or done: not due now.
    first, rest = due[0], due[1:]
    with backend.uow() as uow:
        uow.outbox.mark_done(first.message_id)
        uow.commit()
    with backend.uow() as uow:
        assert uow.outbox.due(now + timedelta(seconds=10), 50) == []
        after_lease = uow.outbox.due(now + timedelta(seconds=31), 1)
        uow.rollback()
    assert [m.message_id for m in after_lease] == [rest[0].message_id]


def test_a_failed_message_waits_for_its_retry_then_dies_and_can_be_redriven(backend: Backend) -> None:
    enrol(backend, "ada")
    upgrade(backend, "ada")
    now = datetime.now(UTC) + timedelta(seconds=1)
    with backend.uow() as uow:
        claimed = uow.outbox.claim_due(now, 50, 0)
        uow.commit()
    target = claimed[0]
    with backend.uow() as uow:
        uow.outbox.mark_failed(target.message_id, "ValueError: boom", now + timedelta(minutes=5))
        uow.commit()
    with backend.uow() as uow:
        due = {m.message_id for m in uow.outbox.claim_due(now + timedelta(minutes=1), 50, 0)}
        failed = uow.outbox.get(target.message_id)
        uow.rollback()
    assert target.message_id not in due
    assert failed is not None and (failed.status, failed.attempts, failed.last_error) == (
        "pending",
        1,
        "ValueError: boom",
    )
    with backend.uow() as uow:
        uow.outbox.mark_failed(target.message_id, "ValueError: boom again", None)
        uow.commit()
    with backend.uow() as uow:
        dead = uow.outbox.dead_letters(10)
        assert not uow.outbox.redrive(claimed[1].message_id, now)
        assert uow.outbox.redrive(target.message_id, now)
        uow.commit()
    assert [(m.message_id, m.status, m.attempts) for m in dead] == [(target.message_id, "dead", 2)]
    with backend.uow() as uow:
        assert uow.outbox.dead_letters(10) == []
        redriven = uow.outbox.claim_due(now + timedelta(seconds=1), 50, 0)
        uow.commit()
    assert [(m.message_id, m.attempts) for m in redriven if m.message_id == target.message_id] == [
        (target.message_id, 0)
    ]


# -- imports and schedules --------------------------------------------------------------------


def test_an_import_records_progress_and_completion(backend: Backend) -> None:
    with backend.uow() as uow:
        assert uow.imports.start("abc", "awards.csv", NOW) == ("running", 0)
        uow.imports.record_progress("abc", 10, 8, 1, NOW)
        uow.commit()
    with backend.uow() as uow:
        assert uow.imports.start("abc", "awards.csv", NOW) == ("running", 10)
        uow.imports.record_progress("abc", 7, 0, 0, NOW)
        uow.commit()
    with backend.uow() as uow:
        assert uow.imports.start("abc", "awards.csv", NOW) == ("running", 10)
        uow.imports.finish("abc", NOW)
        uow.commit()
    with backend.uow() as uow:
        assert uow.imports.start("abc", "awards.csv", NOW) == ("completed", 10)


def test_a_schedule_remembers_its_last_fire(backend: Backend) -> None:
    with backend.uow() as uow:
        assert uow.schedule_runs.last_fire("tier-review") is None
        uow.schedule_runs.record("tier-review", NOW, "ok", None)
        uow.commit()
    later = NOW + timedelta(days=1)
    with backend.uow() as uow:
        uow.schedule_runs.record("tier-review", later, "failed", "boom")
        uow.commit()
    with backend.uow(readonly=True) as uow:
        assert uow.schedule_runs.last_fire("tier-review") == later


def test_every_repository_the_unit_of_work_declares_is_provided(backend: Backend) -> None:
    import typing

    from accrue.ports import UnitOfWork

    declared = typing.get_type_hints(UnitOfWork)
    with backend.uow(readonly=True) as uow:
        missing = [name for name in declared if not hasattr(uow, name)]
        wrong = [
            name for name, port in declared.items() if hasattr(uow, name) and not isinstance(getattr(uow, name), port)
        ]
    assert missing == [] and wrong == []
