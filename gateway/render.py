"""Render the gateway's Envoy configuration for a target (``local`` or ``azure``) from the one template.

CLI: ``python -m gateway.render --target local --data-dir .exthub-data --catalog 127.0.0.1:50051 -o envoy.yaml``
or ``python -m gateway.render --target azure --tenant-id T --client-id C --app-id-uri api://exthub -o envoy.yaml``.
Python: ``render_config("local", data_dir=..., listen_port=0)`` returns the configuration as a dict, and
``dump_config`` turns it into YAML. Check a rendered file with ``envoy --mode validate -c FILE``.

The parts that differ between targets are computed here; the routes, JWT rules and RBAC policies are derived
from the descriptor set's ``google.api.http`` and ``exthub.type.v1.access`` options, so a contract change only
needs a re-render.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import grpc
import yaml

from exthub.contract.dev_tokens import DEV_AUDIENCE, DEV_ISSUER, JWKS_FILE
from exthub.contract.errors import ERROR_DOMAIN, code_number
from exthub.contract.roles import HUB_ADMIN
from gateway.access import AUTHENTICATED, PUBLIC, ROLES, MethodAccess, load_descriptor_set, service_methods
from services.platform.limits import GATEWAY_MAX_REQUEST_HEADERS_KIB, MAX_MESSAGE_BYTES

__all__ = [
    "DEFAULT_DESCRIPTOR",
    "TENANT_HEADER",
    "TRANSCODED_SERVICES",
    "USER_HEADER",
    "AzureParams",
    "LocalParams",
    "admin_address",
    "dump_config",
    "main",
    "render_config",
    "write_config",
]

Target = Literal["local", "azure"]
ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent / "envoy.template.yaml"
DEFAULT_DESCRIPTOR = ROOT / "gen" / "descriptor" / "exthub.binpb"
TRANSCODED_SERVICES = ("exthub.catalog.v1.CatalogService", "exthub.execution.v1.ExecutionService")
SERVICE_CLUSTERS = {
    "exthub.catalog.v1.CatalogService": "catalog",
    "exthub.execution.v1.ExecutionService": "execution",
}
HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection.v1alpha.ServerReflection/"
HEALTHZ_PATH = "/healthz"
OBJECTS_PREFIX = "/objects/v1/"
TENANT_HEADER = "x-exthub-tenant"
USER_HEADER = "x-exthub-user"
JWT_FILTER = "envoy.filters.http.jwt_authn"
TRANSCODER_FILTER = "envoy.filters.http.grpc_json_transcoder"
METADATA_FILTER = "envoy.filters.http.lua"
BUFFER_FILTER = "envoy.filters.http.buffer"
#: gRPC carries headers as metadata, whose rules are narrower than HTTP's (grpc PROTOCOL-HTTP2.md): names are
#: ``[0-9a-z_.-]``, values of non-binary (not ``-bin``) keys printable ASCII. grpc-core refuses a call with an
#: illegal name outright (INTERNAL, "Illegal header key"), so a REST client sending an odd but valid HTTP header
#: got a 500 (found by schemathesis); a value outside the rule may be refused by other gRPC servers. Such headers
#: mean nothing to the services: they are dropped before the router.
#:
#: The authentication scheme is case-insensitive in HTTP (RFC 9110) but jwt_authn matches the ``Bearer `` prefix
#: exactly, so ``authorization: bearer …`` (which the services accept) is rewritten as ``Bearer …`` first.
GRPC_METADATA_LUA = """\
function envoy_on_request(handle)
  local headers = handle:headers()
  local authorization = headers:get("authorization")
  if authorization then
    local scheme, credentials = authorization:match("^%s*(%a+)%s+(.-)%s*$")
    if scheme and scheme:lower() == "bearer" and scheme ~= "Bearer" then
      headers:replace("authorization", "Bearer " .. credentials)
    end
  end
  local illegal = {}
  for name, value in pairs(headers) do
    if name:sub(1, 1) ~= ":" and (name:find("[^0-9a-z_%.%-]")
        or (name:sub(-4) ~= "-bin" and value:find("[^\\32-\\126]"))) then
      illegal[#illegal + 1] = name
    end
  end
  for _, name in ipairs(illegal) do
    headers:remove(name)
  end
end
"""
#: Server streams (``:watch``): the transcoder writes newline-delimited JSON but labels it ``application/json``;
#: a successful stream is relabelled ``application/x-ndjson`` (as the OpenAPI document says). Error replies keep
#: ``application/json`` (one ``google.rpc.Status``). The Lua filter is first in the chain, so on the way back it
#: sees the transcoded response.
NDJSON_STREAM_LUA = (
    GRPC_METADATA_LUA
    + """\
function envoy_on_response(handle)
  local headers = handle:headers()
  if headers:get(":status") == "200" and headers:get("content-type") == "application/json" then
    headers:replace("content-type", "application/x-ndjson")
  end
end
"""
)
PAYLOAD_KEY = "jwt_payload"
#: Where the admin interface's Unix socket is by default (``start_envoy`` puts it in its work directory).
LOCAL_ADMIN_SOCKET = Path("gateway", "envoy-admin.sock")
AZURE_ADMIN_SOCKET = Path("/tmp/envoy-admin.sock")  # noqa: S108 - the gateway pod's private emptyDir /tmp
#: Added by the transcoder (the REST path with its query string); it stays inside Envoy: the services do not
#: need it, and the URL would count against their metadata limit. ``x-envoy-original-method`` still marks a
#: transcoded request for the local reply mapper.
ORIGINAL_PATH_HEADER = "x-envoy-original-path"
ORIGINAL_METHOD_HEADER = "x-envoy-original-method"
MiB = 1024 * 1024
SYSTEM_CA_FILE = Path("/etc/ssl/certs/ca-certificates.crt")
_PLACEHOLDER = re.compile(r"\$\{([a-z_]+)\}")


@dataclass(frozen=True)
class _Common:
    """Parameters shared by both targets."""

    listen_address: str = "127.0.0.1"
    listen_port: int = 8080
    admin_socket: Path | None = None  # default: LOCAL_ADMIN_SOCKET in the data dir / AZURE_ADMIN_SOCKET
    descriptor: Path = DEFAULT_DESCRIPTOR
    inline_descriptor: bool = False
    max_request_body_bytes: int = MAX_MESSAGE_BYTES
    max_response_body_bytes: int = MAX_MESSAGE_BYTES
    max_request_headers_kib: int = GATEWAY_MAX_REQUEST_HEADERS_KIB
    route_timeout_seconds: float = 60.0
    object_timeout_seconds: float = 300.0
    access_log: bool = True


@dataclass(frozen=True)
class LocalParams(_Common):
    """``local``: the hub's development issuer and loopback services (``exthub up``, the tests)."""

    data_dir: Path = Path(".exthub-data")
    jwks_file: Path | None = None  # default: <data_dir>/keys/dev-issuer.jwks.json
    issuer: str = DEV_ISSUER
    audiences: tuple[str, ...] = (DEV_AUDIENCE,)
    catalog_address: str = "127.0.0.1:50051"
    execution_address: str = "127.0.0.1:50052"
    objects_address: str = "127.0.0.1:50054"


@dataclass(frozen=True)
class AzureParams(_Common):
    """``azure``: Azure AD v1 and v2 tokens of one tenant and the services' Kubernetes DNS names."""

    tenant_id: str = ""
    client_id: str = ""
    app_id_uri: str = ""
    namespace: str = "exthub"
    catalog_address: str = ""  # default: exthub-catalog.<namespace>.svc.cluster.local:50051
    execution_address: str = ""  # default: exthub-execution.<namespace>.svc.cluster.local:50052
    objects_address: str = ""  # default: exthub-execution.<namespace>.svc.cluster.local:50054
    authority_host: str = "login.microsoftonline.com"  # host[:port] of the issuer and its JWKS
    authority_ca_file: Path = SYSTEM_CA_FILE  # what the authority's certificate must chain to
    jwks_cache_seconds: int = 300
    listen_address: str = "0.0.0.0"  # noqa: S104 - the gateway pod's listener


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _cluster(name: str, address: str, *, http2: bool, connect_timeout: float = 1.0) -> dict[str, Any]:
    host, port = _host_port(address)
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": _duration(connect_timeout),
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}
            ],
        },
    }
    if not _is_ip(host):
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "max_concurrent_streams": 1024,
                        "connection_keepalive": {"interval": "30s", "timeout": "10s"},
                    }
                },
            }
        }
    return cluster


def _tls_cluster(name: str, authority: str, ca_file: Path) -> dict[str, Any]:
    """An HTTPS upstream for ``authority`` (``host`` or ``host:port``): the certificate must chain to ``ca_file``
    and name the host (a DNS name, or an IP address in an IP SAN)."""
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit():
        host, port = authority, "443"
    cluster = _cluster(name, f"{host}:{port}", http2=False, connect_timeout=5.0)
    tls: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "validation_context": {
                "trusted_ca": {"filename": str(ca_file)},
                "match_typed_subject_alt_names": [
                    {"san_type": "IP_ADDRESS" if _is_ip(host) else "DNS", "matcher": {"exact": host}}
                ],
            }
        },
    }
    if not _is_ip(host):
        tls["sni"] = host
    cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
    return cluster


def _disabled(*filters: str) -> dict[str, Any]:
    return {
        name: {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True} for name in filters
    }


def _routes(params: _Common, methods: Sequence[MethodAccess]) -> list[dict[str, Any]]:
    """Routes match the gRPC path: the transcoder rewrites REST requests before routing.

    The buffer filter (the REST body limit) runs before the transcoder, when a REST request's path matches no
    route yet, so it applies to REST requests only; it is disabled on the routes a native gRPC request matches
    (the gRPC server enforces its own message limit with RESOURCE_EXHAUSTED) and on the HTTP-only routes.
    """
    grpc_route = {"max_stream_duration": {"grpc_timeout_header_max": "0s"}}
    routes: list[dict[str, Any]] = [
        {
            "name": "healthz",
            "match": {"path": HEALTHZ_PATH},
            "direct_response": {"status": 200, "body": {"inline_string": '{"status":"SERVING"}\n'}},
            "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}],
            "typed_per_filter_config": _disabled(TRANSCODER_FILTER, METADATA_FILTER, BUFFER_FILTER),
        },
        {
            "name": "objects",
            "match": {"prefix": OBJECTS_PREFIX},
            "route": {"cluster": "objects", "timeout": _duration(params.object_timeout_seconds)},
            # uploads stream to the object server, which enforces its own size limit
            "typed_per_filter_config": _disabled(TRANSCODER_FILTER, METADATA_FILTER, BUFFER_FILTER),
        },
        {
            "name": "grpc-health",
            "match": {"prefix": HEALTH_PREFIX, "grpc": {}},
            "route": {"cluster": "catalog", "timeout": "5s"},
            "typed_per_filter_config": _disabled(BUFFER_FILTER),
        },
        {
            # grpcurl and friends through the one public port (any valid token); the catalog's reflection knows
            # the catalog's services (ExecutionService callers use the descriptor set or the generated stubs)
            "name": "grpc-reflection",
            "match": {"prefix": REFLECTION_PREFIX, "grpc": {}},
            "route": {"cluster": "catalog", "timeout": "0s", "idle_timeout": "60s"},
            "typed_per_filter_config": _disabled(BUFFER_FILTER),
        },
    ]
    # watch streams end when the execution does, not on a route timeout
    routes.extend(
        {
            "name": f"stream-{method.method}",
            "match": {"path": method.path},
            "route": {
                "cluster": SERVICE_CLUSTERS[method.service],
                "timeout": "0s",
                "idle_timeout": "3600s",
                **grpc_route,
            },
            "request_headers_to_remove": [ORIGINAL_PATH_HEADER],
            "typed_per_filter_config": {
                **_disabled(BUFFER_FILTER),
                METADATA_FILTER: {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute",
                    "source_code": {"inline_string": NDJSON_STREAM_LUA},
                },
            },
        }
        for method in methods
        if method.server_streaming
    )
    for service, cluster in SERVICE_CLUSTERS.items():
        routes.append(
            {
                "name": cluster,
                "match": {"prefix": f"/{service}/"},
                "route": {"cluster": cluster, "timeout": _duration(params.route_timeout_seconds), **grpc_route},
                "request_headers_to_remove": [ORIGINAL_PATH_HEADER],
                "typed_per_filter_config": _disabled(BUFFER_FILTER),
            }
        )
    # any other native gRPC path: UNIMPLEMENTED (after the token and RBAC checks), never buffered, so a streaming
    # call to an unknown method fails at once instead of waiting for a request end that never comes
    routes.append(
        {
            "name": "grpc-unrouted",
            "match": {"prefix": "/", "grpc": {}},
            "direct_response": {"status": 404},
            "typed_per_filter_config": _disabled(BUFFER_FILTER),
        }
    )
    return routes


def _jwt_requirements(providers: Sequence[str]) -> dict[str, Any]:
    any_provider = [{"provider_name": name} for name in providers]
    required: dict[str, Any] = (
        any_provider[0] if len(any_provider) == 1 else {"requires_any": {"requirements": any_provider}}
    )
    # A token is optional on PUBLIC methods, but one that is sent must be valid (and is forwarded).
    optional = {"requires_any": {"requirements": [*any_provider, {"allow_missing": {}}]}}
    return {"required": required, "optional": optional}


def _jwt_rules(methods: Sequence[MethodAccess]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {"match": {"path": HEALTHZ_PATH}},
        {"match": {"prefix": HEALTH_PREFIX}},
        {"match": {"prefix": OBJECTS_PREFIX}},  # the URL signature is the credential
    ]
    rules.extend(
        {"match": {"path": method.path}, "requirement_name": "optional"}
        for method in methods
        if method.audience == PUBLIC
    )
    rules.append({"match": {"prefix": "/"}, "requirement_name": "required"})
    return rules


def _provider(issuer: str, audiences: Sequence[str], jwks: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "audiences": list(audiences),
        **jwks,
        # only the Authorization header: no token in a query string (it would end up in logs)
        "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
        "forward": True,
        "payload_in_metadata": PAYLOAD_KEY,
        "failed_status_in_metadata": "jwt_failure",
        "normalize_payload_in_metadata": {"space_delimited_claims": ["scp"]},
        "claim_to_headers": [
            {"header_name": TENANT_HEADER, "claim_name": "tid"},
            {"header_name": USER_HEADER, "claim_name": "oid"},
        ],
        "require_expiration": True,
        "clock_skew_seconds": 60,
        "jwt_cache_config": {"jwt_cache_size": 1000},
    }


def _roles_matcher(role: str) -> dict[str, Any]:
    return {
        "sourced_metadata": {
            "metadata_matcher": {
                "filter": JWT_FILTER,
                "path": [{"key": PAYLOAD_KEY}, {"key": "roles"}],
                "value": {"list_match": {"one_of": {"string_match": {"exact": role}}}},
            }
        }
    }


def _verified_token() -> dict[str, Any]:
    return {
        "sourced_metadata": {
            "metadata_matcher": {
                "filter": JWT_FILTER,
                "path": [{"key": PAYLOAD_KEY}, {"key": "iss"}],
                "value": {"present_match": True},
            }
        }
    }


def _rbac_policies(methods: Sequence[MethodAccess]) -> dict[str, Any]:
    """ALLOW policies from the access table; any other path (an internal service, unknown) is denied (403)."""
    policies: dict[str, Any] = {
        "health": {
            "permissions": [
                {"url_path": {"path": {"prefix": HEALTH_PREFIX}}},
                {"url_path": {"path": {"exact": HEALTHZ_PATH}}},
            ],
            "principals": [{"any": True}],
        },
        "objects": {"permissions": [{"url_path": {"path": {"prefix": OBJECTS_PREFIX}}}], "principals": [{"any": True}]},
        "reflection": {
            "permissions": [{"url_path": {"path": {"prefix": REFLECTION_PREFIX}}}],
            "principals": [_verified_token()],
        },
    }
    for method in methods:
        if method.audience == PUBLIC:
            principals: list[dict[str, Any]] = [{"any": True}]
        elif method.audience == AUTHENTICATED:
            principals = [_verified_token()]
        elif method.audience == ROLES:
            principals = [_roles_matcher(role) for role in sorted({*method.roles, HUB_ADMIN})]
        else:  # pragma: no cover - service_methods validates the audience
            raise ValueError(method.audience)
        policies[f"{method.service}.{method.method}"] = {
            "permissions": [{"url_path": {"path": {"exact": method.path}}}],
            "principals": principals,
        }
    return policies


def _error_body(code: grpc.StatusCode, reason: str) -> dict[str, Any]:
    """A ``google.rpc.Status`` JSON body (as the transcoder's ``convert_grpc_status`` writes) with ErrorInfo."""
    return {
        "code": code_number(code),
        "message": "%LOCAL_REPLY_BODY%",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": ERROR_DOMAIN,
                "metadata": {"status": code.name},
            }
        ],
    }


LOCAL_REPLIES: tuple[tuple[int, grpc.StatusCode, str], ...] = (
    # (HTTP status, code, ErrorInfo reason) for replies Envoy makes itself
    (400, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST"),
    (401, grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID"),
    (403, grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED"),
    (404, grpc.StatusCode.NOT_FOUND, "ROUTE_NOT_FOUND"),
    (413, grpc.StatusCode.RESOURCE_EXHAUSTED, "REQUEST_TOO_LARGE"),
    (431, grpc.StatusCode.INVALID_ARGUMENT, "HEADERS_TOO_LARGE"),
    (503, grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE"),
    (504, grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT"),
)


def _status_filter(value: int, op: str = "EQ") -> dict[str, Any]:
    return {"status_code_filter": {"comparison": {"op": op, "value": {"default_value": value, "runtime_key": ""}}}}


def _rest_request_filter() -> dict[str, Any]:
    """A REST request: not gRPC, or gRPC made by the transcoder (which adds ``x-envoy-original-method``).

    Native gRPC callers keep Envoy's own local replies (``grpc-status`` and a plain ``grpc-message``).
    """
    return {
        "or_filter": {
            "filters": [
                {
                    "header_filter": {
                        "header": {
                            "name": "content-type",
                            "string_match": {"prefix": "application/grpc"},
                            "invert_match": True,
                            "treat_missing_header_as_empty": True,
                        }
                    }
                },
                {"header_filter": {"header": {"name": ORIGINAL_METHOD_HEADER, "present_match": True}}},
            ]
        }
    }


def _mapper(
    filters: Sequence[dict[str, Any]], code: grpc.StatusCode, reason: str, *, status_code: int | None = None
) -> dict[str, Any]:
    mapper: dict[str, Any] = {
        "filter": {"and_filter": {"filters": [*filters, _rest_request_filter()]}},
        "body_format_override": {"json_format": _error_body(code, reason), "content_type": "application/json"},
    }
    if status_code is not None:
        mapper["status_code"] = status_code
    return mapper


def _jwt_refused(http_status: int) -> list[dict[str, Any]]:
    """``jwt_authn`` refused the request with ``http_status``: a failure is in the dynamic metadata and no provider
    verified the token. With several providers (the azure target's v1 and v2 issuers) the one that does not match
    records its failure even when the other verified the token: then a 403 is RBAC's, not the token's."""
    failed = {"metadata_filter": {"matcher": _jwt_failure_matcher(), "match_if_key_not_found": False}}
    # no verified payload: the key is missing (the default: match), or (never) null; a payload is a struct, which
    # null_match refuses (an access-log metadata filter has no inversion)
    unverified = {
        "metadata_filter": {
            "matcher": {"filter": JWT_FILTER, "path": [{"key": PAYLOAD_KEY}], "value": {"null_match": {}}},
            "match_if_key_not_found": True,
        }
    }
    return [_status_filter(http_status), failed, unverified]


def _local_reply_config() -> dict[str, Any]:
    """Envoy's own error replies (no route, bad query, JWT, RBAC, upstream down) as JSON google.rpc.Status.

    ``jwt_authn`` answers 403 for a verified token whose audience is not ours. That is an invalid token for this
    API (RFC 6750 ``invalid_token``; the services answer UNAUTHENTICATED for it too), so it becomes 401
    UNAUTHENTICATED ``TOKEN_INVALID`` with a ``WWW-Authenticate`` challenge, for REST and native gRPC callers
    alike (Envoy derives ``grpc-status`` from the rewritten HTTP status).
    """
    challenge = [
        {"header": {"key": "www-authenticate", "value": 'Bearer realm="exthub", error="invalid_token"'}},
    ]
    audience = _mapper(_jwt_refused(403), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID", status_code=401)
    audience["headers_to_add"] = challenge
    grpc_audience = {"filter": {"and_filter": {"filters": _jwt_refused(403)}}, "status_code": 401}
    mappers: list[dict[str, Any]] = [audience, grpc_audience]
    for http_status, code, reason in LOCAL_REPLIES:
        mappers.append(_mapper([_status_filter(http_status)], code, reason))
    mappers.append(_mapper([_status_filter(400, "GE")], grpc.StatusCode.UNKNOWN, "GATEWAY_ERROR"))
    return {"mappers": mappers}


def _jwt_failure_matcher() -> dict[str, Any]:
    return {"filter": JWT_FILTER, "path": [{"key": "jwt_failure"}, {"key": "code"}], "value": {"present_match": True}}


def _access_log(enabled: bool) -> list[dict[str, Any]]:
    if not enabled:
        return []
    return [
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {
                    "json_format": {
                        "time": "%START_TIME%",
                        "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
                        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
                        "grpc_path": "%REQ(:PATH)%",
                        "status": "%RESPONSE_CODE%",
                        "grpc_status": "%GRPC_STATUS%",
                        "details": "%RESPONSE_CODE_DETAILS%",
                        "duration_ms": "%DURATION%",
                        "upstream": "%UPSTREAM_CLUSTER%",
                        "request_id": "%REQ(X-REQUEST-ID)%",
                    }
                },
            },
        }
    ]


def _substitute(node: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), node)
    if isinstance(node, list):
        return [_substitute(item, values) for item in node]
    if isinstance(node, dict):
        return {str(_substitute(key, values)): _substitute(value, values) for key, value in node.items()}
    return node


def _params(target: Target, given: Mapping[str, Any]) -> LocalParams | AzureParams:
    cls: type[LocalParams] | type[AzureParams] = LocalParams if target == "local" else AzureParams
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(f"unknown {target} parameters: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    converted = dict(given)
    for name in ("descriptor", "data_dir", "jwks_file", "admin_socket", "authority_ca_file"):
        if converted.get(name) is not None:
            converted[name] = Path(converted[name])
    if "audiences" in converted:
        converted["audiences"] = tuple(converted["audiences"])
    return cls(**converted)


def render_config(target: Target, **params: Any) -> dict[str, Any]:
    """The Envoy bootstrap for ``target`` as a dict (see :class:`LocalParams` / :class:`AzureParams`)."""
    if target not in ("local", "azure"):
        raise ValueError(f"unknown target {target!r}: expected local or azure")
    p = _params(target, params)
    descriptor_path = p.descriptor.resolve()
    methods = service_methods(load_descriptor_set(descriptor_path), TRANSCODED_SERVICES)
    clusters: list[dict[str, Any]]
    if isinstance(p, LocalParams):
        jwks_file = (p.jwks_file or p.data_dir / JWKS_FILE).resolve()
        providers = {"exthub_dev": _provider(p.issuer, p.audiences, {"local_jwks": {"filename": str(jwks_file)}})}
        addresses = {"catalog": p.catalog_address, "execution": p.execution_address, "objects": p.objects_address}
        clusters = []
    else:
        for name in ("tenant_id", "client_id", "app_id_uri"):
            if not getattr(p, name):
                raise ValueError(f"the azure target needs {name}")
        remote = {
            "remote_jwks": {
                "http_uri": {
                    "uri": f"https://{p.authority_host}/{p.tenant_id}/discovery/v2.0/keys",
                    "cluster": "aad_jwks",
                    "timeout": "5s",
                },
                "cache_duration": _duration(p.jwks_cache_seconds),
                "async_fetch": {"fast_listener": False, "failed_refetch_duration": "1s"},
                "retry_policy": {
                    "num_retries": 5,
                    "retry_back_off": {"base_interval": "0.2s", "max_interval": "5s"},
                },
            }
        }
        audiences = (p.app_id_uri, p.client_id)  # v1 aud: either form; v2 aud: the client id
        providers = {
            "aad_v1": _provider(f"https://sts.windows.net/{p.tenant_id}/", audiences, remote),
            "aad_v2": _provider(f"https://{p.authority_host}/{p.tenant_id}/v2.0", audiences, remote),
        }
        dns = f"{p.namespace}.svc.cluster.local"
        addresses = {
            "catalog": p.catalog_address or f"exthub-catalog.{dns}:50051",
            "execution": p.execution_address or f"exthub-execution.{dns}:50052",
            "objects": p.objects_address or f"exthub-execution.{dns}:50054",
        }
        clusters = [_tls_cluster("aad_jwks", p.authority_host, p.authority_ca_file)]
    clusters = [
        _cluster("catalog", addresses["catalog"], http2=True),
        _cluster("execution", addresses["execution"], http2=True),
        _cluster("objects", addresses["objects"], http2=False),
        *clusters,
    ]
    if p.inline_descriptor:
        descriptor_field, descriptor_value = (
            "proto_descriptor_bin",
            base64.b64encode(descriptor_path.read_bytes()).decode("ascii"),
        )
    else:
        descriptor_field, descriptor_value = "proto_descriptor", str(descriptor_path)
    if p.admin_socket is not None:
        admin_socket = p.admin_socket
    elif isinstance(p, LocalParams):
        admin_socket = (p.data_dir / LOCAL_ADMIN_SOCKET).resolve()
    else:
        admin_socket = AZURE_ADMIN_SOCKET
    values: dict[str, Any] = {
        "admin_address": admin_address(admin_socket),
        "max_request_headers_kib": p.max_request_headers_kib,
        "listen_address": p.listen_address,
        "listen_port": p.listen_port,
        "access_log": _access_log(p.access_log),
        "local_reply_config": _local_reply_config(),
        "routes": _routes(p, methods),
        "strip_request_headers": [{"remove": TENANT_HEADER}, {"remove": USER_HEADER}],
        "descriptor_field": descriptor_field,
        "descriptor_value": descriptor_value,
        "transcoded_services": list(TRANSCODED_SERVICES),
        "max_request_body_bytes": p.max_request_body_bytes,
        "max_response_body_bytes": p.max_response_body_bytes,
        "jwt_providers": providers,
        "jwt_requirement_map": _jwt_requirements(list(providers)),
        "jwt_rules": _jwt_rules(methods),
        "rbac_policies": _rbac_policies(methods),
        "grpc_metadata_lua": GRPC_METADATA_LUA,
        "clusters": clusters,
    }
    template = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
    config: dict[str, Any] = _substitute(template, values)
    return config


def admin_address(socket_path: Path) -> dict[str, Any]:
    """The admin interface's address: a Unix socket only its owner may use (mode 0600)."""
    return {"pipe": {"path": str(socket_path), "mode": 0o600}}


def dump_config(config: Mapping[str, Any]) -> str:
    """YAML text of a rendered configuration (key order kept)."""
    return yaml.safe_dump(dict(config), sort_keys=False, width=120)


def write_config(path: Path, target: Target, **params: Any) -> Path:
    """Render and write ``path`` (YAML); returns the path."""
    path.write_text(dump_config(render_config(target, **params)), encoding="utf-8")
    return path


@dataclass
class _Args:
    target: Target = "local"
    output: str = "-"
    params: dict[str, Any] = field(default_factory=dict)


def _parse(argv: Sequence[str] | None) -> _Args:
    parser = argparse.ArgumentParser(prog="python -m gateway.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("local", "azure"), required=True)
    parser.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    parser.add_argument("--listen-address")
    parser.add_argument("--port", dest="listen_port", type=int, help="listener port (0: chosen by the OS)")
    parser.add_argument("--admin-socket", help="the admin interface's Unix socket")
    parser.add_argument("--descriptor", help="descriptor set (default: gen/descriptor/exthub.binpb)")
    parser.add_argument("--inline-descriptor", action="store_true", default=None, help="proto_descriptor_bin")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false", default=None)
    local = parser.add_argument_group("local target")
    local.add_argument("--data-dir", help="hub data directory (its dev issuer JWKS is read from there)")
    local.add_argument("--jwks-file")
    local.add_argument("--catalog", dest="catalog_address", help="catalog gRPC host:port")
    local.add_argument("--execution", dest="execution_address", help="execution gRPC host:port")
    local.add_argument("--objects", dest="objects_address", help="execution service's object HTTP host:port")
    azure = parser.add_argument_group("azure target")
    azure.add_argument("--tenant-id")
    azure.add_argument("--client-id")
    azure.add_argument("--app-id-uri")
    azure.add_argument("--namespace")
    azure.add_argument("--authority-host", help="host[:port] of the token issuer (default login.microsoftonline.com)")
    azure.add_argument("--authority-ca-file", help="CA bundle the issuer's certificate must chain to")
    ns = vars(parser.parse_args(argv))
    target = ns.pop("target")
    output = ns.pop("output")
    return _Args(target=target, output=output, params={k: v for k, v in ns.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    args = _parse(argv)
    try:
        text = dump_config(render_config(args.target, **args.params))
    except (TypeError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
