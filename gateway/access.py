"""The per-RPC access table (``exthub.type.v1.access``) read from the descriptor set, as the gateway needs it.

Reuses :mod:`tools.protodesc` so no generated code is imported: the gateway configuration is derived from the
same contract the services enforce.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2

from tools.protodesc import Options

PUBLIC = "PUBLIC"
AUTHENTICATED = "AUTHENTICATED"
ROLES = "ROLES"
AUDIENCES = (PUBLIC, AUTHENTICATED, ROLES)


@dataclass(frozen=True)
class MethodAccess:
    """One RPC: its gRPC path, its access rule and whether it has a REST binding."""

    service: str
    method: str
    audience: str
    roles: tuple[str, ...]
    has_http_rule: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        """``/package.Service/Method`` (the path the gateway routes and checks, REST or gRPC)."""
        return f"/{self.service}/{self.method}"


def load_descriptor_set(path: Path) -> descriptor_pb2.FileDescriptorSet:
    """Parse a descriptor set file (``buf build -o`` / ``protoc --descriptor_set_out``)."""
    return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())


def service_methods(descriptors: descriptor_pb2.FileDescriptorSet, services: tuple[str, ...]) -> list[MethodAccess]:
    """Every method of ``services`` (fully qualified names) with its access rule; fail closed on a missing rule."""
    options = Options(descriptors.file)
    found: dict[str, list[MethodAccess]] = {}
    for file in descriptors.file:
        for service in file.service:
            full_name = f"{file.package}.{service.name}" if file.package else service.name
            if full_name not in services:
                continue
            methods = found.setdefault(full_name, [])
            for method in service.method:
                rule = options.access(method)
                if rule is None or rule.get("audience") not in AUDIENCES:
                    raise ValueError(f"/{full_name}/{method.name} has no valid exthub.type.v1.access option")
                roles = tuple(rule.get("roles", ()))
                if rule["audience"] == ROLES and not roles:
                    raise ValueError(f"/{full_name}/{method.name}: audience ROLES without roles")
                methods.append(
                    MethodAccess(
                        service=full_name,
                        method=method.name,
                        audience=str(rule["audience"]),
                        roles=roles,
                        has_http_rule=options.http_rule(method) is not None,
                        server_streaming=method.server_streaming,
                    )
                )
    missing = [name for name in services if name not in found]
    if missing:
        raise ValueError(f"services not in the descriptor set: {', '.join(missing)}")
    return [method for name in services for method in found[name]]
