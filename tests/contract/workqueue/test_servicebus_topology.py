"""The test broker's entities are the deployed ones: ``servicebus_topology.json`` against the Terraform module.

The Terraform module ``terraform/modules/servicebus`` is parsed (python-hcl2) and its topics, subscriptions,
correlation filters, duplicate detection, lock duration and max delivery count (the variables' defaults)
are compared with the topology the broker loads, so neither can change without the other.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2

from tools.emulators.servicebus_broker import DEFAULT_TOPOLOGY, load_topology

MODULE = Path(__file__).resolve().parents[3] / "terraform" / "modules" / "servicebus"
OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
_DURATION = re.compile(r"PT(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?")
_EACH_KEY_IS = re.compile(r'^\$\{each\.key == "(?P<key>[^"]+)"\}$')
_TOPIC_REF = re.compile(r'azurerm_servicebus_topic\.this\["(?P<key>[^"]+)"\]')


def _load(name: str) -> dict[str, Any]:
    with (MODULE / name).open(encoding="utf-8") as handle:
        parsed: dict[str, Any] = hcl2.load(handle, serialization_options=OPTIONS)
    return parsed


def _seconds(duration: str) -> float:
    match = _DURATION.fullmatch(duration)
    assert match, f"unsupported ISO 8601 duration {duration!r}"
    return 60 * int(match["m"] or 0) + int(match["s"] or 0)


def _resources(parsed: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for entry in parsed.get("resource", []):
        found.update(entry.get(kind, {}))
    return found


def _flag(expression: Any, each_key: str) -> bool:
    if isinstance(expression, bool):
        return expression
    match = _EACH_KEY_IS.match(str(expression))
    assert match, f"unsupported expression {expression!r}"
    return each_key == match["key"]


def terraform_topology() -> dict[str, Any]:
    """The module's entities in the topology file's shape (only what the broker emulates)."""
    main = _load("main.tf")
    defaults = {
        name: body.get("default") for entry in _load("variables.tf")["variable"] for name, body in entry.items()
    }
    locals_ = main["locals"][0]
    lock_seconds = _seconds(str(defaults["lock_duration"]))
    max_delivery = int(defaults["max_delivery_count"])
    (topic,) = _resources(main, "azurerm_servicebus_topic").values()
    rules = _resources(main, "azurerm_servicebus_subscription_rule")
    topics: dict[str, Any] = {}
    for key, name in locals_["topics"].items():
        window = _seconds(topic["duplicate_detection_history_time_window"])
        topics[name] = {
            "duplicate_detection_seconds": window if _flag(topic["requires_duplicate_detection"], key) else 0,
            "subscriptions": {},
        }
    for resource, body in _resources(main, "azurerm_servicebus_subscription").items():
        ref = _TOPIC_REF.search(body["topic_id"])
        assert ref, body["topic_id"]
        names = locals_["priorities"] if "for_each" in body else {body["name"]: None}
        for sub_name, value in names.items():
            rule = next(
                (r for r in rules.values() if f"azurerm_servicebus_subscription.{resource}[" in r["subscription_id"]),
                None,
            )
            properties = None
            if rule is not None:
                assert rule["filter_type"] == "CorrelationFilter"
                raw = rule["correlation_filter"][0]["properties"]
                properties = {k: value if v == "${each.value}" else v for k, v in raw.items()}
            topics[locals_["topics"][ref["key"]]]["subscriptions"][sub_name] = {
                "properties": properties,
                "lock_duration_seconds": lock_seconds,
                "max_delivery_count": max_delivery,
            }
    return topics


def broker_topology() -> dict[str, Any]:
    """What the test broker loads, in the same shape."""
    return {
        topic.name: {
            "duplicate_detection_seconds": topic.duplicate_window_ms / 1000,
            "subscriptions": {
                sub.name: {
                    "properties": None if sub.properties is None else dict(sub.properties),
                    "lock_duration_seconds": sub.lock_duration_ms / 1000,
                    "max_delivery_count": sub.max_delivery_count,
                }
                for sub in topic.subscriptions
            },
        }
        for topic in load_topology(DEFAULT_TOPOLOGY).topics
    }


def test_the_broker_topology_is_the_terraform_topology() -> None:
    assert broker_topology() == terraform_topology()


def test_the_priority_subscriptions_filter_on_priority() -> None:
    subscriptions = terraform_topology()["execution-requests"]["subscriptions"]
    assert {name: sub["properties"] for name, sub in subscriptions.items()} == {
        "high": {"priority": "HIGH"},
        "normal": {"priority": "NORMAL"},
        "low": {"priority": "LOW"},
    }
