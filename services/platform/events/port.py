"""The event-publishing port: CloudEvents 1.0 out of the hub, at least once, idempotent on the event ``id``.

Contract
--------
* ``publish(events)`` delivers a batch of CloudEvents (built with the ``cloudevents`` library) and returns once
  every destination has accepted every event. When it cannot (a destination is unavailable after the
  adapter's bounded retries) it raises :class:`~services.platform.errors.Unavailable`
  (``BACKEND_UNAVAILABLE``); the caller (the outbox) publishes the same batch again later.
* Delivery is **at least once**: a retried batch may deliver an event a destination already has. The event
  ``id`` is stable (the execution event's name), so subscribers drop repeats by ``id``; adapters that can
  (Service Bus duplicate detection) drop them before subscribers see them.
* Order: within one ``publish`` call, events reach a destination in the order given (so events of one
  subject, the execution, arrive in sequence order), as long as the destination has a single consumer.
* Envelopes carry only what the execution event says (see :mod:`services.platform.events.cloudevent`):
  never a token, key or request body. Adapters add no credentials to what they deliver.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from cloudevents.core.v1.event import CloudEvent

__all__ = ["EventPublisher", "check_webhook_url"]


@runtime_checkable
class EventPublisher(Protocol):
    """Publishes CloudEvents (see the module docstring for the contract)."""

    async def publish(self, events: Sequence[CloudEvent]) -> None:
        """Deliver every event, in order; ``Unavailable`` when not all could be delivered now."""
        ...

    async def close(self) -> None:
        """Release connections (idempotent)."""
        ...


def check_webhook_url(url: str) -> str:
    """An operator-configured sink URL: ``http``/``https`` with a host, no credentials, no fragment.

    Returns the URL unchanged; raises ``ValueError`` saying what is wrong (never echoing the URL, which could
    hold a secret).
    """
    if not isinstance(url, str) or not url or url != url.strip() or any(ch.isspace() for ch in url):
        raise ValueError("a webhook URL must be a non-empty string without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("a webhook URL must be a valid http(s) URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("a webhook URL must use http or https")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("a webhook URL must not carry credentials")
    if not parts.hostname:
        raise ValueError("a webhook URL needs a host")
    if parts.fragment:
        raise ValueError("a webhook URL must not have a fragment")
    if port == 0:
        raise ValueError("a webhook URL needs a real port")
    host = parts.hostname
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(label and len(label) <= 63 for label in host.rstrip(".").split(".")):
            raise ValueError("a webhook URL has an invalid host name") from None
    return url
