"""Domain events out to EventBridge, for other systems to subscribe to (on AWS only).

On the AWS backend the integration events below get one more subscriber, ``publish_to_event_bus``:
like every subscriber it runs from the outbox after commit (through the DynamoDB stream), so an
event is published only for a change that happened, at least once; ``detail.eventId`` lets a
consumer drop a repeat. High-volume events (every points posting) are not published.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from accrue.adapters.aws import codec
from accrue.domain.events import Event

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

SOURCE = "accrue"
HANDLER_NAME = "publish_to_event_bus"
PUBLISHED_EVENTS: tuple[str, ...] = (
    "UserCreated",
    "TierUpgraded",
    "TierDowngraded",
    "MilestonesReached",
    "OrderCreated",
    "ReferralSignedUp",
    "PayoutCompleted",
    "PaymentProcessed",
    "PaymentFailed",
)
PUT_EVENTS_BATCH = 10


class PublishFailed(RuntimeError):
    pass


class EventBridgePublisher:
    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self.client = client
        self.bus_name = bus_name

    def publish(self, events: Sequence[Event]) -> None:
        for start in range(0, len(events), PUT_EVENTS_BATCH):
            part = events[start : start + PUT_EVENTS_BATCH]
            response = self.client.put_events(
                Entries=[
                    {
                        "Source": SOURCE,
                        "DetailType": event.name,
                        "Detail": codec.dumps({"eventId": event.event_id, **event.to_dict()}),
                        "EventBusName": self.bus_name,
                        "Time": event.occurred_at,
                    }
                    for event in part
                ]
            )
            if response.get("FailedEntryCount", 0):
                failed = [e for e in response.get("Entries", []) if e.get("ErrorCode")]
                raise PublishFailed(f"EventBridge refused {len(failed)} events: {failed[0].get('ErrorMessage')}")

    def __call__(self, event: Event, uow: Any) -> None:
        """The event subscriber: publish one event (the unit of work is not needed)."""
        self.publish([event])
