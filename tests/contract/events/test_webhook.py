"""Webhook specifics: which answers are retried, bounded attempts, per-request timeout, no redirects, URLs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from services.platform.errors import Unavailable
from services.platform.events.port import check_webhook_url
from services.platform.events.webhook import WebhookEventPublisher
from services.platform.settings import Settings
from tests.contract.events.conftest import WebhookSink, event, webhook_sink

ATTEMPTS = 3


@pytest.fixture
async def sink() -> AsyncIterator[WebhookSink]:
    """A real HTTP receiver on 127.0.0.1."""
    async with webhook_sink() as found:
        yield found


@pytest.fixture
async def publisher(sink: WebhookSink) -> AsyncIterator[WebhookEventPublisher]:
    """A publisher to ``sink`` with quick backoff."""
    opened = await WebhookEventPublisher.open(
        [sink.url], request_timeout=1.0, max_attempts=ATTEMPTS, backoff_seconds=0.02, max_backoff_seconds=0.1
    )
    try:
        yield opened
    finally:
        await opened.close()


def _statuses(sink: WebhookSink) -> list[int]:
    return [status for _, _, _, status in sink.requests]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
async def test_transient_answers_are_retried(sink: WebhookSink, publisher: WebhookEventPublisher, status: int) -> None:
    sink.script = [status, status]
    await publisher.publish([event()])
    assert _statuses(sink) == [status, status, 204]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422])
async def test_other_client_errors_are_permanent_and_not_retried(
    sink: WebhookSink, publisher: WebhookEventPublisher, status: int
) -> None:
    sink.script = [status]
    await publisher.publish([event("executions/e-1", 1), event("executions/e-1", 2)])  # no error: logged, dropped
    assert _statuses(sink) == [status, 204]
    assert [item.event.get_id() for item in sink.accepted()] == ["executions/e-1/events/2"]


async def test_retries_are_bounded(sink: WebhookSink, publisher: WebhookEventPublisher) -> None:
    sink.down = True
    with pytest.raises(Unavailable):
        await publisher.publish([event("executions/e-1", 1), event("executions/e-1", 2)])
    assert _statuses(sink) == [503] * ATTEMPTS  # the later event is not sent past a stuck earlier one


async def test_redirects_are_not_followed(sink: WebhookSink, publisher: WebhookEventPublisher) -> None:
    sink.script = [307]
    await publisher.publish([event()])
    assert [path for path, _, _, _ in sink.requests] == ["/hook"]  # never /elsewhere


async def test_a_slow_sink_times_out_per_request(sink: WebhookSink, publisher: WebhookEventPublisher) -> None:
    sink.delay_seconds = 3.0
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await publisher.publish([event()])
    assert len(sink.requests) == ATTEMPTS
    assert time.monotonic() - started < ATTEMPTS * 1.0 + 2.0


async def test_every_sink_gets_every_event_and_one_down_sink_fails_the_batch() -> None:
    async with webhook_sink() as up, webhook_sink() as down:
        down.down = True
        publisher = await WebhookEventPublisher.open(
            [up.url, down.url], max_attempts=2, backoff_seconds=0.01, max_backoff_seconds=0.02
        )
        try:
            with pytest.raises(Unavailable):
                await publisher.publish([event("executions/e-1", 1), event("executions/e-1", 2)])
            assert [item.event.get_id() for item in up.accepted()] == [
                "executions/e-1/events/1",
                "executions/e-1/events/2",
            ]
            down.down = False
            await publisher.publish([event("executions/e-1", 1), event("executions/e-1", 2)])
            assert len(down.accepted()) == 2
            assert len(up.accepted()) == 4  # a redelivery: the sink drops repeats by id
        finally:
            await publisher.close()


async def test_the_request_is_a_structured_cloudevent(sink: WebhookSink, publisher: WebhookEventPublisher) -> None:
    await publisher.publish([event()])
    [(_, headers, body, _)] = sink.requests
    assert headers["content-type"] == "application/cloudevents+json"
    assert not any(name.startswith("ce-") for name in headers)  # structured, not binary mode
    assert b'"specversion": "1.0"' in body


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example/x",
        "file:///etc/passwd",
        "https://user:pass@hooks.example/x",
        "https://token@hooks.example/x",
        "https:///nohost",
        "http://hooks.example:0/x",
        "https://hooks.example/x#frag",
        " https://hooks.example/x",
        "hooks.example/x",
        "",
    ],
)
def test_bad_webhook_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_webhook_url(url)
    assert "pass" not in str(caught.value)


@pytest.mark.parametrize("url", ["https://hooks.example/x?code=1", "http://127.0.0.1:8080/events", "http://[::1]/e"])
def test_good_webhook_urls_pass(url: str) -> None:
    assert check_webhook_url(url) == url


def test_settings_take_a_list_of_webhooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTHUB_EVENTS__WEBHOOKS", '["https://a.example/x", "http://127.0.0.1:9/y"]')
    settings = Settings()
    assert settings.events.webhooks == ["https://a.example/x", "http://127.0.0.1:9/y"]
    assert settings.events_publisher == "webhook"
    monkeypatch.setenv("EXTHUB_EVENTS__WEBHOOKS", "https://a.example/x,https://b.example/y")
    assert Settings().events.webhooks == ["https://a.example/x", "https://b.example/y"]


def test_settings_refuse_a_webhook_with_credentials_without_repeating_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTHUB_EVENTS__WEBHOOKS", '["https://user:s3cr3t@a.example/x"]')
    with pytest.raises(ValueError) as caught:
        Settings()
    assert "credentials" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_the_servicebus_publisher_needs_a_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTHUB_EVENTS__PUBLISHER", "servicebus")
    with pytest.raises(ValueError) as caught:
        Settings()
    assert "EXTHUB_AZURE__SERVICEBUS_NAMESPACE" in str(caught.value)
    monkeypatch.setenv("EXTHUB_AZURE__SERVICEBUS_NAMESPACE", "exthub.servicebus.windows.net")
    assert Settings().events_publisher == "servicebus"
