"""Terraform checked offline: fmt, checkov, and assertions over the parsed HCL (python-hcl2). ``terraform
validate`` needs the azurerm provider, which cannot be downloaded here (docs/deploy.md says how to run it)."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest

from deploy import render
from services.platform.backends import COSMOS_SORT_ORDERS
from services.platform.docstore.cosmos_filter import indexing_policy
from tests.deploy.conftest import ROOT, run

TERRAFORM = ROOT / "terraform"
MODULES = TERRAFORM / "modules"
ENVIRONMENT = TERRAFORM / "environments" / "example"
OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
DATA_PLANE_ROLES = {
    "Azure Service Bus Data Sender",
    "Azure Service Bus Data Receiver",
    "Azure Service Bus Data Owner",
    "Storage Blob Data Contributor",
    "Storage Blob Delegator",
    "Key Vault Secrets User",
    "Key Vault Secrets Officer",
}
#: a scope is ONE resource: its id, optionally followed by the path of one sub-resource of it
ONE_RESOURCE = re.compile(
    r"^\$\{(?:data\.)?azurerm_[a-z_]+\.[a-z_]+(?:\[[^\]]+\])?\.id\}(?:/[A-Za-z]+/(?:[a-z0-9-]+|\$\{[^}]+\}))*$"
)


@functools.cache
def parse(path: Path) -> dict[str, Any]:
    """The parsed HCL of one file (parsing is slow: once per file per session; callers must not mutate it)."""
    with path.open(encoding="utf-8") as handle:
        parsed: dict[str, Any] = hcl2.load(handle, serialization_options=OPTIONS)
    return parsed


def tf_files() -> list[Path]:
    return sorted(TERRAFORM.rglob("*.tf"))


def blocks(kind: str, path: Path | None = None) -> Iterator[tuple[Path, str, str, dict[str, Any]]]:
    """(file, type, name, body) of every ``resource``/``data`` block; (file, name, "", body) for others."""
    for file in [path] if path else tf_files():
        for entry in parse(file).get(kind, []):
            for type_or_name, inner in entry.items():
                if kind in ("resource", "data"):
                    for name, body in inner.items():
                        yield file, type_or_name, name, body
                else:
                    yield file, type_or_name, "", inner


def resources(type_: str) -> list[tuple[Path, str, dict[str, Any]]]:
    return [(f, n, b) for f, t, n, b in blocks("resource") if t == type_]


def module_inputs(name: str) -> dict[str, Any]:
    found = [b for _, n, _, b in blocks("module", MODULES / "exthub" / "main.tf") if n == name]
    assert len(found) == 1, name
    return found[0]


def identities_in(expression: Any) -> list[str]:
    """The services whose identity an input expression refers to (``module.identity["x"]``, scaler)."""
    text = json.dumps(expression)
    found = re.findall(r'module\.identity\[\\"([a-z]+)\\"\]', text)
    found += ["scaler"] * text.count("module.scaler_identity.")
    return found


def test_terraform_fmt() -> None:
    terraform = ROOT / ".venv" / "bin" / "terraform"
    run([terraform, "fmt", "-check", "-recursive", "-diff", TERRAFORM])


def test_checkov_terraform_has_no_failed_check(checkov_terraform: dict[str, Any]) -> None:
    failed = [(c["check_id"], c["resource"]) for c in checkov_terraform["results"]["failed_checks"]]
    assert checkov_terraform["summary"]["failed"] == 0, failed
    assert checkov_terraform["summary"]["resource_count"] >= 40
    for skipped in checkov_terraform["results"]["skipped_checks"]:
        reason = skipped["check_result"].get("suppress_comment", "").strip()
        assert len(reason) > 30, f"{skipped['check_id']} on {skipped['resource']} is skipped without a reason"


def test_no_key_based_access_anywhere() -> None:
    (_, _, cosmos), = resources("azurerm_cosmosdb_account")  # fmt: skip
    assert cosmos["local_authentication_disabled"] is True
    assert cosmos["access_key_metadata_writes_enabled"] is False
    (_, _, namespace), = resources("azurerm_servicebus_namespace")  # fmt: skip
    assert namespace["local_auth_enabled"] is False
    (_, _, storage), = resources("azurerm_storage_account")  # fmt: skip
    assert storage["shared_access_key_enabled"] is False
    assert storage["allow_nested_items_to_be_public"] is False
    assert storage["default_to_oauth_authentication"] is True
    (_, _, vault), = resources("azurerm_key_vault")  # fmt: skip
    assert vault["rbac_authorization_enabled"] is True
    assert "access_policy" not in vault
    types = {t for _, t, _, _ in blocks("resource")} | {t for _, t, _, _ in blocks("data")}
    for forbidden in types:
        assert not forbidden.endswith(("_authorization_rule", "_sas", "_access_policy")), forbidden
    for file in tf_files():
        text = file.read_text(encoding="utf-8")
        for attribute in ("primary_key", "secondary_key", "access_key", "primary_connection_string", "sas_token"):
            assert not re.search(rf"\.{attribute}\b", text), f"{file.relative_to(ROOT)} reads {attribute}"
        connection_strings = re.findall(r"[\w.\[\]\"]+\.connection_string\b", text)
        assert set(connection_strings) <= {
            "azurerm_application_insights.this.connection_string",
            "module.observability.connection_string",
        }, connection_strings


def test_every_data_plane_role_is_scoped_to_one_resource() -> None:
    assignments = resources("azurerm_role_assignment")
    assert len(assignments) >= 8
    local_scopes = {name: value for _, name, _, value in blocks("locals") if name != "__comments__"}
    for file, name, body in assignments:
        assert body["role_definition_name"] in DATA_PLANE_ROLES, (file.name, name)
        assert "role_definition_id" not in body
        scope = body["scope"]
        resolved = re.sub(r"^\$\{local\.(\w+)\}$", lambda m: str(local_scopes[m.group(1)]), scope)
        assert ONE_RESOURCE.fullmatch(resolved), f"{file.relative_to(ROOT)} {name}: scope {scope} is not one resource"
        assert "azurerm_resource_group." not in resolved and "azurerm_subscription." not in resolved, scope
    (_, _, cosmos_role), = resources("azurerm_cosmosdb_sql_role_assignment")  # fmt: skip
    assert cosmos_role["role_definition_id"].endswith("/sqlRoleDefinitions/${local.data_contributor_role}")
    assert re.fullmatch(
        r"\$\{azurerm_cosmosdb_account\.this\.id\}/dbs/\$\{[^}]+\}/colls/\$\{[^}]+\}", cosmos_role["scope"]
    )


def test_each_service_has_its_own_identity_and_only_its_roles() -> None:
    exthub = parse(MODULES / "exthub" / "main.tf")
    services = exthub["locals"][0]["services"]
    assert services == '${toset(["catalog", "execution", "agent"])}'
    identity = module_inputs("identity")
    assert identity["for_each"] == "${local.services}" and identity["source"] == "../identity"
    assert module_inputs("scaler_identity")["source"] == "../identity"
    credential = resources("azurerm_federated_identity_credential")[0][2]
    assert credential["subject"] == "system:serviceaccount:${var.service_account_namespace}:${var.service_account_name}"
    assert credential["audience"] == ["api://AzureADTokenExchange"]
    assert identity["service_account_name"] == "${local.service_accounts[each.key]}"
    accounts = exthub["locals"][0]["service_accounts"]
    assert accounts == '${{for s in local.services : s => "${var.release_name}-${s}"}}'  # the chart's names

    cosmos = module_inputs("cosmos")["data_contributors"]
    assert {k: (identities_in(v), v["container"]) for k, v in cosmos.items()} == {
        "catalog": (["catalog"], "catalog"),
        "execution": (["execution"], "executions"),
    }
    servicebus = module_inputs("servicebus")
    assert sorted(identities_in(servicebus["senders"])) == ["execution", "execution"]
    assert sorted(set(identities_in(servicebus["receivers"]))) == ["agent", "execution"]
    assert identities_in(servicebus["scalers"]) == ["scaler"]
    assert identities_in(module_inputs("storage")["blob_contributors"]) == ["execution"]
    keyvault = module_inputs("keyvault")
    assert identities_in(keyvault["vault_readers"]) == ["execution"]
    readers = {k: (identities_in(v), v["secret"]) for k, v in keyvault["secret_readers"].items()}
    assert readers == {
        "catalog-page-token": (["catalog"], "${local.page_token_secret}"),
        "catalog-appinsights": (["catalog"], "${local.appinsights_secret}"),
        "agent-appinsights": (["agent"], "${local.appinsights_secret}"),
    }
    app_roles = resources("azuread_app_role_assignment")[0][2]
    assert app_roles["for_each"] == '${toset(["execution", "agent"])}'


def test_the_azure_layout_matches_the_adapters() -> None:
    (_, _, container), = resources("azurerm_cosmosdb_sql_container")  # fmt: skip
    assert container["partition_key_paths"] == ["/partition"]
    cosmos_vars = {n: b for _, n, _, b in blocks("variable", MODULES / "cosmos" / "variables.tf")}
    assert cosmos_vars["containers"]["default"] == ["catalog", "executions"]
    assert cosmos_vars["database_name"]["default"] == "exthub"
    assert sorted(cosmos_vars["containers"]["default"]) == sorted(COSMOS_SORT_ORDERS)
    servicebus = parse(MODULES / "servicebus" / "main.tf")["locals"][0]
    assert servicebus["priorities"] == {"high": "HIGH", "normal": "NORMAL", "low": "LOW"}
    assert servicebus["topics"] == {"requests": "execution-requests", "events": "execution-events"}
    topic = resources("azurerm_servicebus_topic")[0][2]
    assert topic["requires_duplicate_detection"] is True
    assert topic["duplicate_detection_history_time_window"] == "PT10M"
    subscriptions = {n: b for _, n, b in resources("azurerm_servicebus_subscription")}
    assert subscriptions["requests"]["for_each"] == "${local.priorities}"
    assert subscriptions["requests"]["dead_lettering_on_message_expiration"] is True
    assert subscriptions["events_all"]["name"] == "all"
    rule = resources("azurerm_servicebus_subscription_rule")[0][2]
    assert rule["filter_type"] == "CorrelationFilter"
    assert rule["correlation_filter"] == [{"properties": {"priority": "${each.value}"}}]
    sb_vars = {n: b for _, n, _, b in blocks("variable", MODULES / "servicebus" / "variables.tf")}
    assert sb_vars["max_delivery_count"]["default"] == 10
    storage_vars = {n: b for _, n, _, b in blocks("variable", MODULES / "storage" / "variables.tf")}
    assert storage_vars["container_name"]["default"] == "exthub-objects"
    assert resources("azurerm_storage_container")[0][2]["container_access_type"] == "private"
    (_, _, insights), = resources("azurerm_application_insights")  # fmt: skip
    assert insights["workspace_id"] == "${azurerm_log_analytics_workspace.this.id}"


def _terraform_indexing_policy(container: str) -> dict[str, Any]:
    """The indexing policy Terraform gives ``container``, in the shape of the Cosmos DB REST API."""
    (_, _, resource), = resources("azurerm_cosmosdb_sql_container")  # fmt: skip
    (policy,) = resource["indexing_policy"]
    ((dynamic,),) = [entry.values() for entry in policy["dynamic"]]
    assert dynamic["for_each"] == "${local.composite_indexes[each.value]}"
    (content,) = dynamic["content"]
    ((index,),) = [entry.values() for entry in content["dynamic"]]
    assert index["for_each"] == "${composite_index.value}"
    assert index["content"] == [{"path": "${index.value.path}", "order": "${index.value.order}"}]
    composites = parse(MODULES / "cosmos" / "main.tf")["locals"][0]["composite_indexes"][container]
    return {
        "indexingMode": policy["indexing_mode"],
        "automatic": True,
        "includedPaths": [{"path": p["path"]} for p in policy["included_path"]],
        "excludedPaths": [{"path": p["path"].replace("\\", "")} for p in policy["excluded_path"]],
        "compositeIndexes": [[{"path": i["path"], "order": i["order"].lower()} for i in c] for c in composites],
    }


@pytest.mark.parametrize("container", sorted(COSMOS_SORT_ORDERS))
def test_cosmos_containers_have_the_indexing_policy_the_adapter_needs(container: str) -> None:
    """Every order the services query a container with needs its composite index (Cosmos DB refuses the ORDER BY
    otherwise); Terraform must create each container with exactly the adapter's indexing policy."""
    assert _terraform_indexing_policy(container) == indexing_policy(COSMOS_SORT_ORDERS[container])


def test_core_infrastructure_is_read_not_created() -> None:
    data = {t for _, t, _, _ in blocks("data")}
    assert {
        "azurerm_kubernetes_cluster",
        "azurerm_container_registry",
        "azurerm_dns_zone",
        "azurerm_application_gateway",
    } <= data
    created = {t for _, t, _, _ in blocks("resource")}
    assert not created & {
        "azurerm_kubernetes_cluster",
        "azurerm_container_registry",
        "azurerm_dns_zone",
        "azurerm_application_gateway",
        "azurerm_virtual_network",
    }
    (_, _, record), = resources("azurerm_dns_a_record")  # fmt: skip
    assert "data.azurerm_application_gateway.core.frontend_ip_configuration" in record["target_resource_id"]
    identity = module_inputs("identity")
    assert identity["oidc_issuer_url"] == "${data.azurerm_kubernetes_cluster.core.oidc_issuer_url}"


@pytest.mark.parametrize("file", sorted(TERRAFORM.rglob("variables.tf")), ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_variables_are_typed_described_and_validated(file: Path) -> None:
    variables = list(blocks("variable", file))
    assert variables
    for _, name, _, body in variables:
        assert body.get("type") and body.get("description"), f"{file.name}: {name}"
        required = "default" not in body
        free_form = body["type"] in ("${string}", "${number}", "${list(string)}")
        exempt = name in ("location", "resource_group_name", "name") and "observability" in str(file)
        if (required or body["type"] == "${number}") and free_form and not exempt:
            if name in ("location", "resource_group_name", "tenant_id", "writer_principal_id"):
                continue  # values other resources or data sources hand in
            assert body.get("validation"), f"{file.relative_to(TERRAFORM)}: {name} needs a validation"


def test_outputs_feed_the_chart() -> None:
    module_outputs = [n for _, n, _, _ in blocks("output", MODULES / "exthub" / "outputs.tf")]
    environment_outputs = [n for _, n, _, _ in blocks("output", ENVIRONMENT / "outputs.tf")]
    assert sorted(module_outputs) == sorted(environment_outputs) == sorted(render.OUTPUT_NAMES)
    example = json.loads(render.EXAMPLE_OUTPUTS.read_text(encoding="utf-8"))
    assert sorted(example) == sorted(render.OUTPUT_NAMES)
    for _, name, _, body in blocks("output", MODULES / "exthub" / "outputs.tf"):
        assert body.get("sensitive") is not True, f"{name}: the chart's values hold no secret"


def test_example_tfvars_sets_every_required_variable() -> None:
    with (ENVIRONMENT / "example.tfvars").open(encoding="utf-8") as handle:
        tfvars = hcl2.load(handle, serialization_options=OPTIONS)
    variables = {n: b for _, n, _, b in blocks("variable", ENVIRONMENT / "variables.tf")}
    assert set(tfvars) - {"__comments__"} <= set(variables)
    assert {n for n, b in variables.items() if "default" not in b} <= set(tfvars)
    module_vars = {n for _, n, _, _ in blocks("variable", MODULES / "exthub" / "variables.tf")}
    passed = set(module_inputs_env()) - {"source"}
    assert passed <= module_vars and passed == set(variables)


def module_inputs_env() -> dict[str, Any]:
    found = [b for _, n, _, b in blocks("module", ENVIRONMENT / "main.tf") if n == "exthub"]
    assert len(found) == 1
    return found[0]


def test_providers_are_pinned() -> None:
    terraform = parse(ENVIRONMENT / "main.tf")["terraform"][0]
    assert terraform["required_version"].startswith(">=")
    providers = terraform["required_providers"][0]
    for name in ("azurerm", "azuread"):
        assert re.fullmatch(r">= \d+\.\d+\.\d+, < \d+\.0\.0", providers[name]["version"]), name
