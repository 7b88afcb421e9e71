"""Every setting of the one settings model that matters on Azure can be set from the chart's values: a new
setting without a value path (or an entry in LOCAL_ONLY, with its reason) fails here."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from services.platform.settings import Settings
from tests.deploy.conftest import CHART, Rendered, run

#: Settings that mean nothing on the Azure profile, each with its reason.
LOCAL_ONLY = {
    # the local development issuer's JWKS file; on Azure the services read Entra ID's JWKS (EXTHUB_AUTH__JWKS_URI)
    "EXTHUB_AUTH__JWKS_FILE",
    # the SQLite work queue's file and polling: on Azure the queue is Service Bus
    "EXTHUB_QUEUE_FILE",
    "EXTHUB_QUEUE_POLL_SECONDS",
    # a TCP endpoint other than the namespace: the local Service Bus test broker (tests, `exthub up --emulators`);
    # on AKS the namespace's own name resolves (private DNS for a private endpoint)
    "EXTHUB_AZURE__SERVICEBUS_ENDPOINT",
}
#: Names fixed by the shared decisions that settings.py does not define yet (other branches add them); the
#: chart already sets them. Once a name lands in the model it is checked like every other.
PENDING = {
    "EXTHUB_SIGNING_DIR",
    "EXTHUB_CATALOG_HTTP_PORT",
    "EXTHUB_AGENT_HTTP_PORT",
    "EXTHUB_AZURE__BLOB_CONTAINER",
    "EXTHUB_AZURE__CLIENT_ID",
    "EXTHUB_AZURE__SERVICE_TOKEN_SCOPE",
    "EXTHUB_EGRESS__ALLOW",
    "EXTHUB_TELEMETRY__AZURE_MONITOR",
}
SETTINGS_SECTIONS = {"settings": None, "catalog": "catalog", "execution": "execution", "agent": "agent"}


def settings_env_names(model: type[BaseModel] = Settings, prefix: str = "EXTHUB_") -> set[str]:
    """Every environment variable the model reads (nested sections joined with ``__``)."""
    names = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= settings_env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def snake(name: str) -> str:
    """The chart's key → env name rule (Helm's snakecase)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def schema_paths(schema: dict[str, Any], prefix: str = "EXTHUB_") -> dict[str, dict[str, Any]]:
    """env name → JSON schema of every key under a ``settings`` object of values.schema.json."""
    paths: dict[str, dict[str, Any]] = {}
    for key, sub in schema["properties"].items():
        name = prefix + snake(key)
        if sub.get("type") == "object" and "properties" in sub:
            paths |= schema_paths(sub, name + "__")
        else:
            paths[name] = sub
    return paths


def chart_settings_schema() -> dict[str, dict[str, dict[str, Any]]]:
    """Per values section (settings, catalog, execution, agent): its settings keys' env names and schemas."""
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))["properties"]
    return {
        section: schema_paths(schema["settings"] if component is None else schema[component]["properties"]["settings"])
        for section, component in SETTINGS_SECTIONS.items()
    }


def emitted(item: Rendered) -> dict[str, set[str]]:
    """container → EXTHUB_* names it gets."""
    return {
        d["metadata"]["name"].removeprefix("exthub-"): {
            e["name"] for e in d["spec"]["template"]["spec"]["containers"][0].get("env", [])
        }
        for d in item.kind("Deployment")
    }


def test_every_azure_setting_has_a_value_path(rendered: dict[str, Rendered]) -> None:
    model = settings_env_names()
    set_by_chart = set().union(*emitted(rendered["production"]).values())
    from_values = set().union(*(set(paths) for paths in chart_settings_schema().values()))
    missing = model - set_by_chart - from_values - LOCAL_ONLY
    assert not missing, f"settings without a value path in helm/exthub (add one, or to LOCAL_ONLY): {sorted(missing)}"
    assert model >= LOCAL_ONLY, f"stale LOCAL_ONLY entries: {sorted(LOCAL_ONLY - model)}"


def test_chart_sets_only_real_settings(rendered: dict[str, Rendered]) -> None:
    model = settings_env_names()
    for item in rendered.values():
        for component, names in emitted(item).items():
            unknown = {n for n in names if n.startswith("EXTHUB_")} - model - PENDING
            assert not unknown, f"{item.name}/{component}: no such setting {sorted(unknown)}"
    declared = set().union(*(set(paths) for paths in chart_settings_schema().values()))
    assert declared - model - PENDING == set(), "values.schema.json declares settings the model does not have"


def _sample(schema: dict[str, Any]) -> Any:
    """A valid, non-null value for a settings key's schema."""
    options = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    first = options[0]
    kind = first.get("type")
    if "examples" in first:  # a key whose strings have a format names a valid one
        return first["examples"][0]
    if "enum" in first:
        return first["enum"][-1]
    if kind == "boolean":
        return False
    if kind in ("integer", "number"):
        return max(first.get("minimum", 1), 2)
    if kind == "array":
        item = first.get("items", {"type": "string"})
        return [_sample(item) if ("enum" in item or "type" in item) else "x"]
    return "10.1.0.0/16"


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def test_each_settings_key_reaches_its_services(helm_bin: Path, rendered: dict[str, Rendered], tmp_path: Path) -> None:
    """Set every settings key of values.schema.json; each becomes its env var, in the right containers only,
    with the value the services parse."""
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))["properties"]
    flat: dict[str, Any] = {}
    expected: dict[str, dict[str, Any]] = {c: {} for c in ("catalog", "execution", "agent")}

    def walk(section_schema: dict[str, Any], path: str, env: str, targets: tuple[str, ...]) -> None:
        for key, sub in section_schema["properties"].items():
            if sub.get("type") == "object" and "properties" in sub:
                walk(sub, f"{path}.{key}", f"{env}{snake(key)}__", targets)
                continue
            value = _sample(sub)
            flat[f"{path}.{key}"] = value
            for target in targets:
                expected[target][env + snake(key)] = value

    walk(schema["settings"], "settings", "EXTHUB_", ("catalog", "execution", "agent"))
    for component in ("catalog", "execution", "agent"):
        walk(schema[component]["properties"]["settings"], f"{component}.settings", "EXTHUB_", (component,))
    values_file = tmp_path / "all-settings.yaml"
    values_file.write_text(yaml.safe_dump(_nest(flat)), encoding="utf-8")
    item = rendered["production"]
    manifests = run([
        helm_bin, "template", "exthub", CHART, "--namespace", "exthub",
        "--values", item.manifests_file.parent / "values.yaml", "--values", values_file,
    ]).stdout  # fmt: skip
    deployments = {
        d["metadata"]["name"].removeprefix("exthub-"): d
        for d in yaml.safe_load_all(manifests)
        if d and d["kind"] == "Deployment"
    }
    for component, variables in expected.items():
        env = {
            e["name"]: e.get("value")
            for e in deployments[component]["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        for name, value in variables.items():
            assert name in env, f"{component}: {name} missing"
            rendered_value = env[name]
            if isinstance(value, bool):
                assert rendered_value == str(value).lower()
            elif isinstance(value, list):
                assert json.loads(rendered_value) == value
            else:
                assert rendered_value == str(value), (name, rendered_value, value)
        others = set().union(*(expected[c] for c in expected if c != component)) - set(variables)
        assert not others & set(env), f"{component} got another service's settings: {sorted(others & set(env))}"


def test_rendered_settings_parse_in_the_settings_model(rendered: dict[str, Rendered], monkeypatch: Any) -> None:
    """The env of each service container, as rendered, is accepted by the settings model (secrets and pending
    names aside): a wrong format in the chart would stop the service at start."""
    model = settings_env_names()
    for item in (rendered["staging"], rendered["production"]):
        for deployment in item.kind("Deployment"):
            if deployment["metadata"]["name"] == "exthub-gateway":
                continue
            env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            for name in [n for n in os.environ if n.startswith("EXTHUB_")]:
                monkeypatch.delenv(name)
            for variable in env:
                pending = variable["name"] in PENDING - model  # the azure section refuses unknown names
                if variable["name"].startswith("EXTHUB_") and "value" in variable and not pending:
                    monkeypatch.setenv(variable["name"], variable["value"])
            monkeypatch.setenv("EXTHUB_PAGE_TOKEN_SECRET", "x" * 32)  # from Key Vault in the cluster
            settings = Settings()
            assert settings.backend == "azure"
            assert settings.auth.configured
            assert str(settings.data_dir) == "/var/lib/exthub"
            assert settings.host == "0.0.0.0"  # noqa: S104
