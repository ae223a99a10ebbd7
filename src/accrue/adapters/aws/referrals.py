"""DynamoDB repositories for referrals and payout runs.

- The referrer's counters live on the member item. ``increment_referral_count`` reads the count
  and the commit adds one only if it is still that count, so the reward step a signup was given
  is the step its commit really reached, whatever other signups do meanwhile.
- A member is referred once: a ``REFERRED#<member>`` claim item goes with the referral.
- A payout run claims rewards by writing a claim item into the run's own partition (ordered by
  referrer, as the report is) in the same transaction as the reward's update; every transaction of
  claims also checks that the run is still assigning. The report and the marking read the run's
  partition with consistent queries: no index lag can leave a claimed reward out of either.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from accrue.adapters.aws import codec, keys
from accrue.adapters.aws.dynamodb_uow import MAX_TRANSACTION_ITEMS, Session, Write
from accrue.adapters.aws.repositories import ENTITY, member_group, page
from accrue.adapters.aws.table import GSI1, GSI2, PARTITION_KEY, SORT_KEY
from accrue.domain.errors import ConcurrencyConflict, Conflict, InvalidInput, NotFound
from accrue.domain.payouts import Month, PayoutLine, PayoutRun, RunPhase, RunStatus, run_id_for
from accrue.domain.referrals import Referral, ReferrerSummary, RewardStatus
from accrue.ports import Page, PayoutRepository, ReferralRepository

REFERRAL_COUNT = "referral_count"
REWARDS_CENTS = "referral_rewards_cents"
HELD, UNCLAIMED = "held", "unclaimed"
# Each claim is two writes (the reward and its claim item) and each transaction one run check.
CLAIMS_PER_TRANSACTION = (MAX_TRANSACTION_ITEMS - 1) // 2


def _waiting(referral: Referral) -> keys.Key:
    """The GSI2 entry a reward needs in its current state (none once claimed, paid or rejected)."""
    if referral.status is RewardStatus.HELD:
        return keys.referral_waiting(HELD, referral.created_at, referral.referral_id)
    if referral.status is RewardStatus.PENDING and referral.payout_run_id is None:
        return keys.referral_waiting(UNCLAIMED, referral.created_at, referral.referral_id)
    return {}


def _referral_item(referral: Referral) -> dict[str, Any]:
    item = {ENTITY: "referral", **codec.to_attributes(referral)}
    item.update(keys.referral_of_referrer(referral.referrer_id, referral.created_at, referral.referral_id))
    item.update(_waiting(referral))
    return item


class DynamoReferralRepository(ReferralRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def member_with_email_identity(self, identity: str) -> str | None:
        for items, _ in self.session.query(
            IndexName=GSI1.name,
            KeyConditionExpression="#pk = :pk",
            ExpressionAttributeNames={"#pk": GSI1.partition_key},
            ExpressionAttributeValues={":pk": keys.email_identity_listing(identity, "")[GSI1.partition_key]},
        ):
            for item in items:
                if not item.get("erased"):
                    return str(item["user_id"])
        return None

    def _counter(self, member_id: str, attribute: str, delta: int, field: str) -> int:
        key = keys.member(member_id)
        raw = self.session.loaded.get((key[PARTITION_KEY], key[SORT_KEY])) or self.session.get(key)
        if raw is None:
            raise NotFound(f"referrer {member_id} not found", details={"field": field})
        current = int(raw.get(attribute, 0))
        self.session.observe(key, attribute, current)
        self.session.add_to(key, attribute, delta, member_group(member_id))
        return current + self.session.pending_delta(key, attribute)

    def increment_referral_count(self, referrer_id: str) -> int:
        return self._counter(referrer_id, REFERRAL_COUNT, 1, "referralCode")

    def add_to_total_rewards(self, referrer_id: str, delta_cents: int) -> int:
        return self._counter(referrer_id, REWARDS_CENTS, delta_cents, "referrerId")

    def count_since(self, referrer_id: str, since: datetime) -> int:
        return self._count(referrer_id, since)

    def _count(self, referrer_id: str, since: datetime) -> int:
        """Select=COUNT: DynamoDB counts the index entries without returning them."""
        request: dict[str, Any] = {
            "TableName": self.session.table_name,
            "IndexName": GSI1.name,
            "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :low AND :high",
            "ExpressionAttributeNames": {"#pk": GSI1.partition_key, "#sk": GSI1.sort_key},
            "ExpressionAttributeValues": codec.serialize(
                {
                    ":pk": keys.member_partition(referrer_id),
                    ":low": keys.join(keys.Prefix.REFERRAL, keys.sortable_time(since)),
                    ":high": keys.join(keys.Prefix.REFERRAL, "~"),
                }
            ),
            "Select": "COUNT",
        }
        total = 0
        while True:
            response = self.session.client.query(**request)
            total += int(response.get("Count", 0))
            last = response.get("LastEvaluatedKey")
            if not last:
                return total
            request["ExclusiveStartKey"] = last

    def add(self, referral: Referral) -> None:
        group = member_group(referral.referred_id)

        def referred_twice() -> Exception:
            return Conflict("this member was already referred", details={"field": "userId"})

        if self.session.staged(keys.referred(referral.referred_id)) is not None:
            raise referred_twice()
        self.session.stage(
            Write.insert(
                keys.referred(referral.referred_id),
                {ENTITY: "referred", "referral_id": referral.referral_id},
                group=group,
                conflict=referred_twice,
            )
        )
        self.session.stage(
            Write.insert(
                keys.referral(referral.referral_id),
                _referral_item(referral),
                group=group,
                conflict=lambda: Conflict(f"referral {referral.referral_id} already exists"),
            )
        )

    def get(self, referral_id: str) -> Referral | None:
        item = self.session.get(keys.referral(referral_id))
        return codec.from_attributes(Referral, item) if item else None

    def save_review(self, referral: Referral, expected_status: RewardStatus) -> None:
        key = keys.referral(referral.referral_id)
        if self.session.staged(key) is not None:
            raise ConcurrencyConflict(f"reward {referral.referral_id} changed concurrently; retry")
        self.session.stage(
            Write(
                "Put",
                key,
                item=_referral_item(referral),
                condition="#status = :expected",
                names={"#status": "status"},
                values={":expected": str(expected_status)},
                group=member_group(referral.referrer_id),
                conflict=lambda: ConcurrencyConflict(f"reward {referral.referral_id} changed concurrently; retry"),
            )
        )

    def _of_referrer(self, referrer_id: str) -> Iterator[dict[str, Any]]:
        for items, _ in self._referrer_pages(referrer_id):
            yield from items

    def _referrer_pages(self, referrer_id: str) -> Iterator[tuple[list[dict[str, Any]], Any]]:
        return self.session.query(
            IndexName=GSI1.name,
            KeyConditionExpression="#pk = :pk AND begins_with(#sk, :prefix)",
            ExpressionAttributeNames={"#pk": GSI1.partition_key, "#sk": GSI1.sort_key, "#status": "status"},
            ExpressionAttributeValues={
                ":pk": keys.member_partition(referrer_id),
                ":prefix": keys.join(keys.Prefix.REFERRAL, ""),
            },
            ProjectionExpression="#status, reward_cents",
        )

    def summary(self, referrer_id: str) -> ReferrerSummary | None:
        member = self.session.get(keys.member(referrer_id))
        if member is None:
            return None
        by_status: dict[str, int] = {}
        for item in self._of_referrer(referrer_id):
            status = str(item["status"])
            by_status[status] = by_status.get(status, 0) + int(item["reward_cents"])
        return ReferrerSummary(
            referrer_id=referrer_id,
            referral_code=str(member.get("referral_code") or ""),
            referral_count=int(member.get(REFERRAL_COUNT, 0)),
            total_rewards_cents=int(member.get(REWARDS_CENTS, 0)),
            pending_cents=by_status.get(str(RewardStatus.PENDING), 0),
            held_cents=by_status.get(str(RewardStatus.HELD), 0),
            paid_cents=by_status.get(str(RewardStatus.PAID), 0),
        )

    def list_for_referrer(self, referrer_id: str, limit: int, cursor: str | None) -> Page[Referral]:
        items, next_cursor = page(
            self.session,
            index=GSI1.name,
            partition=keys.member_partition(referrer_id),
            sort_prefix=keys.join(keys.Prefix.REFERRAL, ""),
            limit=limit,
            cursor=cursor,
        )
        return Page([codec.from_attributes(Referral, i) for i in items], next_cursor)

    def list_held(self, limit: int, cursor: str | None) -> Page[Referral]:
        items, next_cursor = page(
            self.session,
            index=GSI2.name,
            partition=keys.join(keys.Prefix.REFERRALS, HELD),
            sort_prefix="",
            limit=limit,
            cursor=cursor,
            newest_first=False,
        )
        fresh = {
            str(i["referral_id"]): i
            for i in self.session.batch_get([keys.referral(str(i["referral_id"])) for i in items])
        }
        held = [
            codec.from_attributes(Referral, fresh[str(i["referral_id"])])
            for i in items
            if str(i["referral_id"]) in fresh and fresh[str(i["referral_id"])]["status"] == HELD
        ]
        return Page(held, next_cursor)


# -- payout runs ------------------------------------------------------------------------------


def _run_item(run: PayoutRun) -> dict[str, Any]:
    item = {ENTITY: "payout_run", **codec.to_attributes(run)}
    item["month"] = str(run.month)
    item.update(keys.payout_run_listing(str(run.month)))
    return item


def _run(item: dict[str, Any]) -> PayoutRun:
    values = dict(item)
    values["month"] = {"year": int(str(item["month"])[:4]), "month": int(str(item["month"])[5:7])}
    return codec.from_attributes(PayoutRun, values)


class DynamoPayoutRepository(PayoutRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def _item(self, run_id: str) -> dict[str, Any] | None:
        staged = self.session.staged(keys.payout_run(run_id))
        if staged is not None and staged.item is not None:
            return staged.item
        return self.session.get(keys.payout_run(run_id))

    def start_run(self, run: PayoutRun) -> PayoutRun:
        existing = self._item(run.run_id)
        if existing is None:
            self.session.stage(
                Write.insert(
                    keys.payout_run(run.run_id),
                    _run_item(run),
                    conflict=lambda: ConcurrencyConflict(f"payout run {run.month} was started concurrently; retry"),
                )
            )
            return run
        found = _run(existing)
        if found.status is RunStatus.COMPLETED:
            return found
        found.attempts += 1
        found.status = RunStatus.RUNNING
        self._replace(found, expected_attempts=found.attempts - 1)
        return found

    def _replace(self, run: PayoutRun, *, expected_attempts: int | None = None) -> None:
        condition, values = f"attribute_exists({PARTITION_KEY})", {}
        if expected_attempts is not None:
            condition, values = "attempts = :seen", {":seen": expected_attempts}
        self.session.stage(
            Write(
                "Put",
                keys.payout_run(run.run_id),
                item=_run_item(run),
                condition=condition,
                values=values,
                conflict=lambda: ConcurrencyConflict(f"payout run {run.month} changed concurrently; retry"),
            ),
            replace=True,
        )

    def get_run(self, month: str) -> PayoutRun | None:
        try:
            run_id = run_id_for(Month.parse(month))
        except InvalidInput:
            return None
        item = self._item(run_id)
        return _run(item) if item else None

    def list_runs(self, limit: int, cursor: str | None) -> Page[PayoutRun]:
        items, next_cursor = page(
            self.session,
            index=GSI1.name,
            partition=str(keys.Prefix.PAYOUT_RUNS),
            sort_prefix="",
            limit=limit,
            cursor=cursor,
        )
        return Page([_run(i) for i in items], next_cursor)

    def _run_guard(self, run_id: str, phase: RunPhase) -> Write:
        return Write(
            "ConditionCheck",
            keys.payout_run(run_id),
            condition="phase = :phase",
            values={":phase": str(phase)},
            conflict=lambda: ConcurrencyConflict(f"payout run {run_id} moved on meanwhile"),
        )

    def assign_chunk(self, run_id: str, cutoff: datetime, limit: int) -> int:
        run = self._item(run_id)
        if run is None or run.get("phase") != str(RunPhase.ASSIGNING):
            return 0
        position_before = keys.referral_position(cutoff, "")
        candidates: list[dict[str, Any]] = []
        for items, _ in self.session.query(
            IndexName=GSI2.name,
            KeyConditionExpression="#pk = :pk AND #sk < :cutoff",
            ExpressionAttributeNames={"#pk": GSI2.partition_key, "#sk": GSI2.sort_key},
            ExpressionAttributeValues={
                ":pk": keys.join(keys.Prefix.REFERRALS, UNCLAIMED),
                ":cutoff": position_before,
            },
            Limit=min(limit, 1000),
        ):
            candidates.extend(items)
            if len(candidates) >= limit:
                break
        fresh = self.session.batch_get([keys.referral(str(c["referral_id"])) for c in candidates[:limit]])
        claimable = sorted(
            (
                codec.from_attributes(Referral, i)
                for i in fresh
                if i["status"] == str(RewardStatus.PENDING) and not i.get("payout_run_id")
            ),
            key=lambda r: (r.created_at, r.referral_id),
        )
        claimable = [r for r in claimable if r.created_at < cutoff][:limit]
        for start in range(0, len(claimable), CLAIMS_PER_TRANSACTION):
            writes = [self._run_guard(run_id, RunPhase.ASSIGNING)]
            for referral in claimable[start : start + CLAIMS_PER_TRANSACTION]:
                writes.append(
                    Write(
                        "Update",
                        keys.referral(referral.referral_id),
                        update="SET payout_run_id = :run REMOVE #gpk, #gsk",
                        condition="#status = :pending AND attribute_not_exists(payout_run_id)",
                        names={"#status": "status", "#gpk": GSI2.partition_key, "#gsk": GSI2.sort_key},
                        values={":run": run_id, ":pending": str(RewardStatus.PENDING)},
                        conflict=lambda: ConcurrencyConflict("a reward was claimed concurrently; retry"),
                    )
                )
                writes.append(
                    Write(
                        "Put",
                        keys.payout_claim(run_id, referral.referrer_id, referral.referral_id),
                        item={
                            ENTITY: "payout_claim",
                            "referral_id": referral.referral_id,
                            "referrer_id": referral.referrer_id,
                            "reward_cents": referral.reward_cents,
                            "status": str(RewardStatus.PENDING),
                        },
                    )
                )
            self.session.bundle(writes)
        return len(claimable)

    def finish_assigning(self, run_id: str, now: datetime) -> None:
        self._set_phase(run_id, RunPhase.ASSIGNING, RunPhase.REPORTING, now)

    def _set_phase(self, run_id: str, before: RunPhase, after: RunPhase, now: datetime) -> None:
        item = self._item(run_id)
        if item is None or item.get("phase") != str(before):
            return
        run = _run(item)
        run.phase = after
        self.session.stage(
            Write(
                "Put",
                keys.payout_run(run_id),
                item={**_run_item(run), "updated_at": keys.sortable_time(now)},
                condition="phase = :before",
                values={":before": str(before)},
                conflict=lambda: ConcurrencyConflict(f"payout run {run_id} moved on meanwhile"),
            ),
            replace=True,
        )

    def _claims(self, run_id: str, **extra: Any) -> Iterator[dict[str, Any]]:
        for items, _ in self.session.query(
            KeyConditionExpression="#pk = :pk AND begins_with(#sk, :prefix)",
            ExpressionAttributeNames={"#pk": PARTITION_KEY, "#sk": SORT_KEY, **extra.pop("names", {})},
            ExpressionAttributeValues={
                ":pk": keys.payout_claim(run_id, "", "")[PARTITION_KEY],
                ":prefix": keys.join(keys.Prefix.CLAIM, ""),
                **extra.pop("values", {}),
            },
            **extra,
        ):
            yield from items

    def iter_lines(self, run_id: str) -> Iterator[PayoutLine]:
        current: str | None = None
        total = count = 0
        for claim in self._claims(run_id):
            referrer = str(claim["referrer_id"])
            if referrer != current:
                if current is not None:
                    yield PayoutLine(current, total, count)
                current, total, count = referrer, 0, 0
            total += int(claim["reward_cents"])
            count += 1
        if current is not None:
            yield PayoutLine(current, total, count)

    def record_report(
        self,
        run_id: str,
        report_key: str,
        location: str,
        referrers: int,
        rewards: int,
        total_cents: int,
        now: datetime,
    ) -> None:
        item = self._item(run_id)
        if item is None:
            raise NotFound(f"payout run {run_id} not found")
        run = _run(item)
        run.report_key, run.report_location = report_key, location
        run.referrers, run.rewards, run.total_cents = referrers, rewards, total_cents
        if run.phase is RunPhase.REPORTING:
            run.phase = RunPhase.MARKING
        self.session.stage(
            Write(
                "Put",
                keys.payout_run(run_id),
                item={**_run_item(run), "updated_at": keys.sortable_time(now)},
                condition="phase = :seen",
                values={":seen": str(item["phase"])},
                conflict=lambda: ConcurrencyConflict(f"payout run {run_id} moved on meanwhile"),
            ),
            replace=True,
        )

    def mark_paid_chunk(self, run_id: str, paid_at: datetime, limit: int) -> int:
        pending: list[dict[str, Any]] = []
        for claim in self._claims(
            run_id,
            FilterExpression="#status = :pending",
            names={"#status": "status"},
            values={":pending": str(RewardStatus.PENDING)},
        ):
            pending.append(claim)
            if len(pending) >= limit:
                break
        paid = keys.sortable_time(paid_at)
        per_transaction = MAX_TRANSACTION_ITEMS // 2
        for start in range(0, len(pending), per_transaction):
            writes: list[Write] = []
            for claim in pending[start : start + per_transaction]:
                writes.append(
                    Write(
                        "Update",
                        keys.referral(str(claim["referral_id"])),
                        update="SET #status = :paid, paid_at = :at",
                        condition="#status = :pending AND payout_run_id = :run",
                        names={"#status": "status"},
                        values={
                            ":paid": str(RewardStatus.PAID),
                            ":pending": str(RewardStatus.PENDING),
                            ":at": paid,
                            ":run": run_id,
                        },
                        conflict=lambda: ConcurrencyConflict("a reward was paid concurrently; retry"),
                    )
                )
                writes.append(
                    Write(
                        "Update",
                        keys.payout_claim(run_id, str(claim["referrer_id"]), str(claim["referral_id"])),
                        update="SET #status = :paid",
                        names={"#status": "status"},
                        values={":paid": str(RewardStatus.PAID)},
                    )
                )
            self.session.bundle(writes)
        return len(pending)

    def complete(self, run_id: str, now: datetime) -> bool:
        item = self._item(run_id)
        if item is None or item.get("status") == str(RunStatus.COMPLETED):
            return False
        run = _run(item)
        run.status, run.phase, run.completed_at, run.last_error = RunStatus.COMPLETED, RunPhase.DONE, now, None
        self.session.stage(
            Write(
                "Put",
                keys.payout_run(run_id),
                item={**_run_item(run), "updated_at": keys.sortable_time(now)},
                condition="#status <> :completed",
                names={"#status": "status"},
                values={":completed": str(RunStatus.COMPLETED)},
                conflict=lambda: ConcurrencyConflict(f"payout run {run_id} was completed concurrently"),
            ),
            replace=True,
        )
        return True

    def record_failure(self, run_id: str, error: str, now: datetime) -> None:
        item = self._item(run_id)
        if item is None or item.get("status") == str(RunStatus.COMPLETED):
            return
        run = _run(item)
        run.status, run.last_error = RunStatus.FAILED, error[:2000]
        self.session.stage(
            Write(
                "Put",
                keys.payout_run(run_id),
                item={**_run_item(run), "updated_at": keys.sortable_time(now)},
                condition="#status <> :completed",
                names={"#status": "status"},
                values={":completed": str(RunStatus.COMPLETED)},
            ),
            replace=True,
        )
