"""The gateway configuration: rendered from the one template for both targets, and accepted by Envoy itself."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from exthub.contract.dev_tokens import DEV_AUDIENCE, DEV_ISSUER, DevIssuer, dev_jwks_path
from exthub.contract.errors import code_number
from exthub.contract.roles import HUB_ADMIN
from gateway.access import load_descriptor_set, service_methods
from gateway.envoy import EnvoyError, validate_config
from gateway.render import (
    DEFAULT_DESCRIPTOR,
    GRPC_METADATA_LUA,
    NDJSON_STREAM_LUA,
    TEMPLATE,
    TRANSCODED_SERVICES,
    dump_config,
    main,
    render_config,
    write_config,
)
from services.execution.handlers.queries import WAIT_MAX_SECONDS
from services.platform.limits import GATEWAY_MAX_REQUEST_HEADERS_KIB, MAX_METADATA_BYTES

TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
AZURE = {"tenant_id": TENANT, "client_id": CLIENT, "app_id_uri": "api://exthub"}


def http_filters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return {f["name"]: f["typed_config"] for f in hcm["http_filters"]}


def filter_order(config: dict[str, Any]) -> list[str]:
    return list(http_filters(config))


def hcm(config: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    DevIssuer.load_or_create(tmp_path / "data")
    return tmp_path / "data"


def test_local_config_is_valid_for_envoy(tmp_path: Path, data_dir: Path) -> None:
    path = write_config(tmp_path / "local.yaml", "local", data_dir=data_dir)
    assert "OK" in validate_config(path)
    inline = write_config(tmp_path / "inline.yaml", "local", data_dir=data_dir, inline_descriptor=True, listen_port=0)
    assert "OK" in validate_config(inline)


def test_azure_config_is_valid_for_envoy(tmp_path: Path) -> None:
    path = write_config(tmp_path / "azure.yaml", "azure", **AZURE)
    assert "OK" in validate_config(path)
    inline = write_config(tmp_path / "azure-inline.yaml", "azure", inline_descriptor=True, **AZURE)
    assert "OK" in validate_config(inline)


def test_envoy_refuses_a_broken_config(tmp_path: Path, data_dir: Path) -> None:
    config = render_config("local", data_dir=data_dir)
    http_filters(config)["envoy.filters.http.grpc_json_transcoder"]["services"].append("no.such.Service")
    path = tmp_path / "broken.yaml"
    path.write_text(dump_config(config))
    with pytest.raises(EnvoyError, match=r"no\.such\.Service"):
        validate_config(path)


def test_filter_order_and_transcoder_options(data_dir: Path) -> None:
    config = render_config("local", data_dir=data_dir)
    assert filter_order(config) == [
        "envoy.filters.http.lua",
        "envoy.filters.http.buffer",
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.grpc_json_transcoder",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.rbac",
        "envoy.filters.http.router",
    ]
    transcoder = http_filters(config)["envoy.filters.http.grpc_json_transcoder"]
    assert transcoder["services"] == ["exthub.catalog.v1.CatalogService", "exthub.execution.v1.ExecutionService"]
    assert transcoder["proto_descriptor"] == str(DEFAULT_DESCRIPTOR)
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["request_validation_options"] == {
        "reject_unknown_method": True,
        "reject_unknown_query_parameters": True,
        "reject_binding_body_field_collisions": True,
    }
    assert transcoder["print_options"]["always_print_primitive_fields"] is True
    assert transcoder["print_options"]["stream_newline_delimited"] is True
    assert transcoder["case_insensitive_enum_parsing"] is True and transcoder["query_param_unescape_plus"] is True
    assert transcoder["max_request_body_size"] == transcoder["max_response_body_size"] == 4 * 1024 * 1024
    assert http_filters(config)["envoy.filters.http.buffer"]["max_request_bytes"] == 4 * 1024 * 1024
    stripped = http_filters(config)["envoy.filters.http.header_mutation"]["mutations"]["request_mutations"]
    assert {m["remove"] for m in stripped} == {"x-exthub-tenant", "x-exthub-user"}


def test_inline_descriptor_is_the_descriptor_set(data_dir: Path) -> None:
    config = render_config("local", data_dir=data_dir, inline_descriptor=True)
    transcoder = http_filters(config)["envoy.filters.http.grpc_json_transcoder"]
    assert "proto_descriptor" not in transcoder
    assert base64.b64decode(transcoder["proto_descriptor_bin"]) == DEFAULT_DESCRIPTOR.read_bytes()


def test_local_jwt_provider_uses_the_dev_issuer_jwks_file(data_dir: Path) -> None:
    config = render_config("local", data_dir=data_dir)
    jwt = http_filters(config)["envoy.filters.http.jwt_authn"]
    (provider,) = jwt["providers"].values()
    assert provider["issuer"] == DEV_ISSUER
    assert provider["audiences"] == [DEV_AUDIENCE]
    assert provider["local_jwks"] == {"filename": str(dev_jwks_path(data_dir).resolve())}
    assert provider["forward"] is True and provider["require_expiration"] is True
    assert provider["from_headers"] == [{"name": "authorization", "value_prefix": "Bearer "}], "no query tokens"
    assert {h["claim_name"]: h["header_name"] for h in provider["claim_to_headers"]} == {
        "tid": "x-exthub-tenant",
        "oid": "x-exthub-user",
    }


def test_azure_accepts_v1_and_v2_tokens_with_both_audience_forms() -> None:
    config = render_config("azure", **AZURE)
    jwt = http_filters(config)["envoy.filters.http.jwt_authn"]
    providers = jwt["providers"]
    assert providers["aad_v1"]["issuer"] == f"https://sts.windows.net/{TENANT}/"
    assert providers["aad_v2"]["issuer"] == f"https://login.microsoftonline.com/{TENANT}/v2.0"
    for provider in providers.values():
        assert provider["audiences"] == ["api://exthub", CLIENT]
        remote = provider["remote_jwks"]
        assert remote["http_uri"]["uri"] == f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"
        assert remote["http_uri"]["cluster"] == "aad_jwks"
        assert remote["async_fetch"]["fast_listener"] is False
        assert remote["retry_policy"]["num_retries"] > 0
    required = jwt["requirement_map"]["required"]
    assert required == {"requires_any": {"requirements": [{"provider_name": "aad_v1"}, {"provider_name": "aad_v2"}]}}
    optional = jwt["requirement_map"]["optional"]["requires_any"]["requirements"]
    assert optional[-1] == {"allow_missing": {}}
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    endpoint = clusters["catalog"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {
        "address": "exthub-catalog.exthub.svc.cluster.local",
        "port_value": 50051,
    }
    assert clusters["catalog"]["type"] == "STRICT_DNS"
    assert clusters["aad_jwks"]["transport_socket"]["typed_config"]["sni"] == "login.microsoftonline.com"


def test_azure_target_for_another_authority_trusts_its_ca_and_matches_its_ip(tmp_path: Path) -> None:
    """The emulator profile renders the same azure target for its local token authority (an IP and a port,
    HTTPS with the development CA): issuer and JWKS URI follow the authority, the certificate must be the CA's
    and name the IP."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    config = render_config("azure", authority_host="127.0.0.1:8443", authority_ca_file=ca, **AZURE)
    providers = http_filters(config)["envoy.filters.http.jwt_authn"]["providers"]
    assert providers["aad_v2"]["issuer"] == f"https://127.0.0.1:8443/{TENANT}/v2.0"
    assert (
        providers["aad_v2"]["remote_jwks"]["http_uri"]["uri"] == f"https://127.0.0.1:8443/{TENANT}/discovery/v2.0/keys"
    )
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "aad_jwks"]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert endpoint["socket_address"] == {"address": "127.0.0.1", "port_value": 8443}
    assert cluster["type"] == "STATIC"
    tls = cluster["transport_socket"]["typed_config"]
    assert "sni" not in tls  # no SNI for an IP address
    validation = tls["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"filename": str(ca)}
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "IP_ADDRESS", "matcher": {"exact": "127.0.0.1"}}
    ]
    entra = render_config("azure", **AZURE)
    (default,) = [c for c in entra["static_resources"]["clusters"] if c["name"] == "aad_jwks"]
    default_validation = default["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"]
    assert default_validation["trusted_ca"] == {"filename": "/etc/ssl/certs/ca-certificates.crt"}
    assert default_validation["match_typed_subject_alt_names"][0]["san_type"] == "DNS"


def test_azure_needs_its_parameters() -> None:
    with pytest.raises(ValueError, match="tenant_id"):
        render_config("azure", client_id=CLIENT, app_id_uri="api://exthub")
    with pytest.raises(TypeError, match="unknown local parameters: tenant_id"):
        render_config("local", tenant_id=TENANT)
    with pytest.raises(ValueError, match="unknown target"):
        render_config("gcp")  # type: ignore[arg-type]


def test_jwt_rules_and_rbac_follow_the_proto_access_table(data_dir: Path) -> None:
    config = render_config("local", data_dir=data_dir)
    jwt = http_filters(config)["envoy.filters.http.jwt_authn"]
    rules = {(r["match"].get("path") or r["match"].get("prefix")): r.get("requirement_name") for r in jwt["rules"]}
    assert rules["/healthz"] is None and rules["/grpc.health.v1.Health/"] is None and rules["/objects/v1/"] is None
    assert rules["/exthub.execution.v1.ExecutionService/GetSigningKeys"] == "optional"
    assert rules["/exthub.execution.v1.ExecutionService/ReportExecutionStatus"] == "optional"
    assert list(rules)[-1] == "/" and rules["/"] == "required"

    policies = http_filters(config)["envoy.filters.http.rbac"]["rules"]["policies"]
    methods = service_methods(load_descriptor_set(DEFAULT_DESCRIPTOR), TRANSCODED_SERVICES)
    for method in methods:
        name = f"{method.service}.{method.method}"
        policy = policies[name]
        assert policy["permissions"] == [{"url_path": {"path": {"exact": method.path}}}]
        if method.audience == "PUBLIC":
            assert policy["principals"] == [{"any": True}]
        elif method.audience == "ROLES":
            roles = {
                p["sourced_metadata"]["metadata_matcher"]["value"]["list_match"]["one_of"]["string_match"]["exact"]
                for p in policy["principals"]
            }
            assert roles == {*method.roles, HUB_ADMIN}
        else:
            (principal,) = policy["principals"]
            assert principal["sourced_metadata"]["metadata_matcher"]["path"] == [{"key": "jwt_payload"}, {"key": "iss"}]
    reflection = policies["reflection"]
    assert reflection["principals"][0]["sourced_metadata"]["metadata_matcher"]["path"][1] == {"key": "iss"}
    create = policies["exthub.catalog.v1.CatalogService.CreateExtension"]["principals"]
    assert create[0]["sourced_metadata"]["metadata_matcher"]["filter"] == "envoy.filters.http.jwt_authn"
    internal = ("exthub.agent.v1.AgentService", "exthub.execution.v1.AgentTaskService")
    internal_methods = service_methods(load_descriptor_set(DEFAULT_DESCRIPTOR), internal)
    assert {m.method for m in internal_methods} >= {"ClaimExecution", "Execute", "GetAgentInfo"}
    for method in internal_methods:  # the internal services get no ALLOW policy: RBAC denies them
        assert not any(method.service in name for name in policies), method.path


def _takes(match: dict[str, Any], path: str) -> bool:
    """Whether a route's ``match`` takes a request for ``path``."""
    return match.get("path") == path or ("prefix" in match and path.startswith(match["prefix"]))


def test_routes(data_dir: Path) -> None:
    config = render_config("local", data_dir=data_dir, catalog_address="127.0.0.1:1234")
    routes = {r["name"]: r for r in hcm(config)["route_config"]["virtual_hosts"][0]["routes"]}
    assert not any("AgentTaskService" in str(r["match"]) or "AgentService" in str(r["match"]) for r in routes.values())
    assert routes["grpc-unrouted"]["direct_response"]["status"] == 404
    assert routes["stream-WatchExecution"]["route"]["timeout"] == "0s"
    # a REST :wait, and a REST create with ?waitTimeout= (no grpc-timeout header), run under the execution route's
    # timeout (the first route whose match takes their gRPC path): it outlasts the longest wait
    assert float(routes["execution"]["route"]["timeout"].removesuffix("s")) >= WAIT_MAX_SECONDS + 5
    for method in ("WaitExecution", "CreateExecution"):
        path = f"/exthub.execution.v1.ExecutionService/{method}"
        first = next(r for r in routes.values() if _takes(r["match"], path))
        assert first["name"] == "execution", method
    stream_lua = routes["stream-WatchExecution"]["typed_per_filter_config"]["envoy.filters.http.lua"]
    assert stream_lua["source_code"]["inline_string"] == NDJSON_STREAM_LUA
    assert "application/x-ndjson" in NDJSON_STREAM_LUA and NDJSON_STREAM_LUA.startswith(GRPC_METADATA_LUA)
    assert routes["objects"]["route"]["cluster"] == "objects"
    for http_only in ("objects", "healthz"):  # not gRPC upstreams: no transcoding, no metadata rules, no buffer
        disabled = routes[http_only]["typed_per_filter_config"]
        assert set(disabled) == {
            "envoy.filters.http.grpc_json_transcoder",
            "envoy.filters.http.lua",
            "envoy.filters.http.buffer",
        }
        assert all(config["disabled"] is True for config in disabled.values())
    assert routes["grpc-reflection"]["route"]["cluster"] == "catalog"
    assert routes["grpc-unrouted"] == {
        "name": "grpc-unrouted",
        "match": {"prefix": "/", "grpc": {}},
        "direct_response": {"status": 404},
        "typed_per_filter_config": {
            "envoy.filters.http.buffer": {
                "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                "disabled": True,
            }
        },
    }
    assert list(routes)[-1] == "grpc-unrouted", "the catch-all comes last"
    for grpc_route in ("catalog", "execution", "grpc-health", "grpc-reflection", "stream-WatchExecution"):
        assert routes[grpc_route]["typed_per_filter_config"]["envoy.filters.http.buffer"]["disabled"] is True
    assert routes["catalog"]["match"] == {"prefix": "/exthub.catalog.v1.CatalogService/"}
    assert not any("AgentService" in str(r["match"]) and "route" in r for r in routes.values())
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert clusters["catalog"]["type"] == "STATIC"
    assert "typed_extension_protocol_options" in clusters["catalog"]  # HTTP/2 to gRPC upstreams
    assert "typed_extension_protocol_options" not in clusters["objects"]


def test_template_is_the_single_source(data_dir: Path) -> None:
    template = yaml.safe_load(TEMPLATE.read_text())
    local, azure = render_config("local", data_dir=data_dir), render_config("azure", **AZURE)
    assert set(local) == set(azure) == set(template)
    assert "${" not in dump_config(local) and "${" not in dump_config(azure)


def test_cli(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.yaml"
    assert main(["--target", "local", "--data-dir", str(data_dir), "--port", "0", "-o", str(out)]) == 0
    listener = yaml.safe_load(out.read_text())["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["port_value"] == 0
    argv = ["--target", "azure", "--tenant-id", TENANT, "--client-id", CLIENT, "--app-id-uri", "api://exthub"]
    assert main(argv) == 0
    assert f"https://sts.windows.net/{TENANT}/" in capsys.readouterr().out
    assert main(["--target", "azure"]) == 2
    assert "tenant_id" in capsys.readouterr().err


def test_local_replies_are_google_rpc_status_and_a_wrong_audience_is_401(data_dir: Path) -> None:
    mappers = hcm(render_config("local", data_dir=data_dir))["local_reply_config"]["mappers"]
    audience, grpc_audience = mappers[0], mappers[1]
    assert audience["status_code"] == grpc_audience["status_code"] == 401
    jwt_failed = audience["filter"]["and_filter"]["filters"][1]["metadata_filter"]["matcher"]
    assert jwt_failed["filter"] == "envoy.filters.http.jwt_authn" and jwt_failed["path"][0] == {"key": "jwt_failure"}
    assert "body_format_override" not in grpc_audience, "native gRPC callers keep grpc-status/grpc-message"
    assert audience["headers_to_add"][0]["header"]["key"] == "www-authenticate"
    body = audience["body_format_override"]["json_format"]
    assert (
        body["code"] == code_number(grpc.StatusCode.UNAUTHENTICATED) and body["details"][0]["reason"] == "TOKEN_INVALID"
    )
    reasons = {
        m["filter"]["and_filter"]["filters"][0]["status_code_filter"]["comparison"]["value"]["default_value"]: m[
            "body_format_override"
        ]["json_format"]["details"][0]["reason"]
        for m in mappers[2:-1]
    }
    assert reasons == {
        400: "INVALID_REQUEST",
        401: "TOKEN_INVALID",
        403: "ROLE_REQUIRED",
        404: "ROUTE_NOT_FOUND",
        413: "REQUEST_TOO_LARGE",
        431: "HEADERS_TOO_LARGE",
        503: "BACKEND_UNAVAILABLE",
        504: "UPSTREAM_TIMEOUT",
    }
    assert mappers[-1]["body_format_override"]["json_format"]["details"][0]["reason"] == "GATEWAY_ERROR"


@pytest.mark.parametrize("target", ["local", "azure"])
def test_admin_is_a_private_unix_socket_and_headers_are_bounded(target: str, data_dir: Path) -> None:
    params: dict[str, Any] = (
        {"data_dir": data_dir}
        if target == "local"
        else {"tenant_id": "t", "client_id": "c", "app_id_uri": "api://exthub"}
    )
    config = render_config(target, **params)  # type: ignore[arg-type]
    address = config["admin"]["address"]
    assert set(address) == {"pipe"} and address["pipe"]["mode"] == 0o600, "no TCP admin"
    assert hcm(config)["max_request_headers_kb"] == GATEWAY_MAX_REQUEST_HEADERS_KIB
    assert GATEWAY_MAX_REQUEST_HEADERS_KIB * 1024 <= MAX_METADATA_BYTES // 2, "room for what Envoy adds"
    routes = hcm(config)["route_config"]["virtual_hosts"][0]["routes"]
    forwarded = [r for r in routes if "route" in r and r["route"]["cluster"] in ("catalog", "execution")]
    services = [r for r in forwarded if r["name"] in ("catalog", "execution") or r["name"].startswith("stream-")]
    assert services and all(r["request_headers_to_remove"] == ["x-envoy-original-path"] for r in services)


def test_the_lua_filter_normalises_the_bearer_scheme() -> None:
    assert 'scheme:lower() == "bearer"' in GRPC_METADATA_LUA
    assert GRPC_METADATA_LUA in NDJSON_STREAM_LUA, "the watch route's Lua does it too"
