"""The event-publishing port (CloudEvents 1.0 out of the hub) and its adapters: webhooks and Service Bus."""

from services.platform.events.cloudevent import ExecutionEventFacts, routing_properties, to_cloudevent
from services.platform.events.port import EventPublisher, check_webhook_url

__all__ = ["EventPublisher", "ExecutionEventFacts", "check_webhook_url", "routing_properties", "to_cloudevent"]
