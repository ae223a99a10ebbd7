"""What the DynamoDB guards prevent when two units of work overlap (on SQLite they cannot: writers
are serialised). Each case opens both units of work before either commits, which makes the race
deterministic (moto itself is not safe to call from several threads at once)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from accrue.adapters.aws.dynamodb_uow import DynamoUnitOfWork
from accrue.domain.audit import AuditRecord
from accrue.domain.errors import ConcurrencyConflict
from accrue.domain.ledger import Reason
from accrue.ports import UnitOfWork
from tests.contract.conftest import NOW, new_member, subscribers
from tests.contract.test_feature_repositories import campaign
from tests.moto_support import TABLE_NAME, client, create_table, fake_aws_environment


@pytest.fixture
def uow() -> Iterator[type[UnitOfWork]]:
    with fake_aws_environment(), mock_aws():
        dynamodb = client("dynamodb")
        create_table(dynamodb)

        def factory(readonly: bool = False) -> UnitOfWork:
            return DynamoUnitOfWork(dynamodb, TABLE_NAME, subscribers, readonly=readonly)

        yield factory  # type: ignore[misc]


def enrol(factory: type[UnitOfWork], *users: str) -> None:
    with factory() as uow:  # type: ignore[call-arg]
        for user in users:
            uow.members.add(new_member(user))
        uow.commit()


def test_two_awards_decided_on_the_same_budget_total_cannot_both_commit(uow: type[UnitOfWork]) -> None:
    enrol(uow, "ada", "bob")
    with uow() as setup:  # type: ignore[call-arg]
        setup.campaigns.add(campaign(1))  # 100 points in total, 60 per member
        setup.commit()
    first, second = uow(), uow()  # type: ignore[call-arg]
    with first, second:
        for work, user in ((first, "ada"), (second, "bob")):
            assert work.campaigns.drawn("cmp_1") == 0  # both see the whole budget
            member = work.members.get(user)
            assert member is not None
            work.track(member)
            member.credit(
                transfer_id=f"campaign:cmp_1:{user}",
                points=60,
                reason=Reason.CAMPAIGN,
                reference="c",
                now=NOW,
                source_account="campaign:cmp_1:budget",
            )
        first.commit()
        with pytest.raises(ConcurrencyConflict):
            second.commit()
    with uow(readonly=True) as check:  # type: ignore[call-arg]
        assert check.campaigns.drawn("cmp_1") == 60
        bob = check.members.get("bob")
        assert check.ledger.get("campaign:cmp_1:bob") is None
    assert bob is not None and bob.balance == 0


def test_two_audit_appends_on_the_same_head_cannot_fork_the_chain(uow: type[UnitOfWork]) -> None:
    record = AuditRecord("system", "payment.created", "payment", "p1", NOW, {})
    first, second = uow(), uow()  # type: ignore[call-arg]
    with first, second:
        a = first.audit.append([record])
        b = second.audit.append([record])
        assert a[0].seq == b[0].seq == 1
        first.commit()
        with pytest.raises(ConcurrencyConflict):
            second.commit()
    with uow(readonly=True) as check:  # type: ignore[call-arg]
        assert [e.hash for e in check.audit.iter_all()] == [a[0].hash]


def test_two_signups_counted_from_the_same_referral_count_cannot_both_commit(uow: type[UnitOfWork]) -> None:
    enrol(uow, "ref")
    first, second = uow(), uow()  # type: ignore[call-arg]
    with first, second:
        assert first.referrals.increment_referral_count("ref") == 1
        assert second.referrals.increment_referral_count("ref") == 1
        first.commit()
        with pytest.raises(ConcurrencyConflict):
            second.commit()
    with uow(readonly=True) as check:  # type: ignore[call-arg]
        summary = check.referrals.summary("ref")
    assert summary is not None and summary.referral_count == 1


def test_a_member_changed_by_two_overlapping_units_of_work_keeps_the_first_and_refuses_the_second(
    uow: type[UnitOfWork],
) -> None:
    enrol(uow, "ada")
    first, second = uow(), uow()  # type: ignore[call-arg]
    with first, second:
        for work, points in ((first, 10), (second, 20)):
            member = work.members.get("ada")
            assert member is not None
            work.track(member)
            member.credit(transfer_id=f"t-{points}", points=points, reason=Reason.EARN, reference="r", now=NOW)
        first.commit()
        with pytest.raises(ConcurrencyConflict):
            second.commit()
    with uow(readonly=True) as check:  # type: ignore[call-arg]
        member = check.members.get("ada")
        assert check.ledger.get("t-20") is None
        assert check.ledger.check() == []
    assert member is not None and member.balance == 10
