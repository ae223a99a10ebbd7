"""The Queue port on the SQLite queue and on SQS (moto, with a redrive policy), with the same
assertions: visibility, receive counts, delays, the dead-letter queue after three receives, redrive,
batches. Timings use whole seconds (SQS's unit) and changed visibility instead of waiting."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from accrue.adapters.aws.sqs_queue import SqsQueue
from accrue.adapters.sqlite.database import Database
from accrue.adapters.sqlite.queue import SqliteQueue
from accrue.ports import Queue, QueueCounts
from tests.moto_support import client, fake_aws_environment


@pytest.fixture(params=["sqlite", "sqs"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Queue]:
    if request.param == "sqlite":
        db = Database(tmp_path / "queue.db")
        db.migrate()
        yield SqliteQueue(db, "payments", visibility_timeout_seconds=30, max_receive_count=3)
        db.close()
        return
    with fake_aws_environment(), mock_aws():
        sqs = client("sqs")
        dlq = sqs.create_queue(QueueName="payments-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        url = sqs.create_queue(
            QueueName="payments",
            Attributes={
                "VisibilityTimeout": "30",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}),
            },
        )["QueueUrl"]
        yield SqsQueue(sqs, url, name="payments")


def test_a_received_message_is_hidden_then_delivered_again_with_a_higher_count(queue: Queue) -> None:
    (message_id,) = queue.send_batch([{"paymentIds": ["p1"]}])
    first = queue.receive(10)
    assert [(m.message_id, m.body, m.receive_count) for m in first] == [(message_id, {"paymentIds": ["p1"]}, 1)]
    assert queue.receive(10) == []
    assert queue.counts() == QueueCounts(visible=0, in_flight=1, delayed=0, dead=0)
    queue.change_visibility(first[0].receipt_handle, 0, error="ValueError: try again")
    again = queue.receive(10)
    assert [(m.message_id, m.receive_count) for m in again] == [(message_id, 2)]
    assert again[0].receipt_handle != first[0].receipt_handle


def test_a_batch_keeps_its_order_of_ids_and_every_body(queue: Queue) -> None:
    bodies = [{"n": n, "amount": "1.10"} for n in range(25)]
    ids = queue.send_batch(bodies)
    assert len(ids) == len(set(ids)) == 25
    seen: dict[str, dict[str, object]] = {}
    for _ in range(10):
        for message in queue.receive(10):
            seen[message.message_id] = message.body
            queue.delete(message.receipt_handle)
    assert [seen[i] for i in ids] == bodies
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, delayed=0, dead=0)


def test_a_deleted_message_is_not_delivered_again(queue: Queue) -> None:
    queue.send({"n": 1})
    queue.send({"n": 2})
    messages = queue.receive(10)
    queue.delete_batch([m.receipt_handle for m in messages])
    for message in messages:
        queue.change_visibility(message.receipt_handle, 0)  # a stale handle: nothing happens
    assert queue.receive(10) == []


def test_a_delayed_message_is_invisible_until_its_delay_has_passed(queue: Queue) -> None:
    queue.send({"later": True}, delay_seconds=1)
    assert queue.receive(10) == []
    assert queue.counts().delayed == 1
    time.sleep(1.2)
    assert [m.body for m in queue.receive(10)] == [{"later": True}]


def test_the_fourth_receive_moves_a_message_to_the_dead_letter_queue_and_redrive_brings_it_back(
    queue: Queue,
) -> None:
    queue.send({"poison": True})
    for count in (1, 2, 3):
        (message,) = queue.receive(10)
        assert message.receive_count == count
        queue.change_visibility(message.receipt_handle, 0, error="ValueError: bad message")
    assert queue.receive(10) == []
    dead = queue.dead_letters(10)
    assert [(d.body, d.receive_count >= 3) for d in dead] == [({"poison": True}, True)]
    assert queue.counts().dead == 1
    assert queue.redrive("no-such-message") is False
    assert queue.redrive(dead[0].message_id) is True
    (back,) = queue.receive(10)
    assert (back.body, back.receive_count) == ({"poison": True}, 1)
    assert queue.dead_letters(10) == []
