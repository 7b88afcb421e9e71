"""protoc plugin ``openapi``: one OpenAPI 3.0.3 document for the REST surface of the given protos.

Run by buf with ``strategy: all`` (see ``buf.gen.yaml``); writes ``exthub.openapi.yaml``. It reads the
``google.api.http`` rules and maps them as Envoy's gRPC-JSON transcoder serves them:

* path templates are expanded segment by segment (``/v1/{name=executions/*}:cancel`` →
  ``/v1/executions/{execution}:cancel``), naming each wildcard after the resource pattern of the bound
  field (``google.api.resource_reference`` / ``google.api.resource``);
* every request field that is neither bound to the path nor to the body becomes a query parameter
  when it is a scalar, an enum, a repeated scalar or a string-mapped well-known type, recursing into
  message fields with dotted names (maps and repeated messages cannot be query parameters);
* ``body: "*"`` sends the request message minus its path fields, ``body: "field"`` that field;
* a ``default`` response carries ``google.rpc.Status`` (Envoy's ``convert_grpc_status``);
* schemas follow the proto3 JSON mapping: lowerCamel names, enums as strings, 64-bit integers,
  Timestamp, Duration and FieldMask as strings, Struct as an object, Value as any value;
  ``REQUIRED`` → ``required``, ``OUTPUT_ONLY`` → ``readOnly``, ``INPUT_ONLY`` → ``writeOnly``;
* comments become descriptions; ``operationId`` is ``<Service>_<Method>``; every operation requires a
  bearer JWT except those whose ``exthub.type.v1.access`` audience is ``PUBLIC``.

Output is deterministic: operations in path order, schemas sorted by name, no timestamps.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any

import yaml
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from exthub.contract.roles import HUB_ADMIN
from tools.protodesc import Options, http_verb_and_path, leading_comments

OUTPUT_NAME = "exthub.openapi.yaml"
TITLE = "Exthub API"
DESCRIPTION = (
    "The REST surface of Exthub, the extension hub: the catalog of extensions and versions, and their "
    "executions. Served by the Envoy gateway, which transcodes REST/JSON to the gRPC services; every "
    "error body is a `google.rpc.Status` with an `ErrorInfo` detail (domain `exthub.io`). Generated "
    "from the protos by `python -m tools.generate`; do not edit."
)
STATUS = "google.rpc.Status"
ANY = "google.protobuf.Any"
FieldType = descriptor_pb2.FieldDescriptorProto

#: proto3 JSON mapping of the well-known types that are not plain messages.
WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$", "example": "3600s"},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated lowerCamel field paths."},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.DoubleValue": {"type": "number", "format": "double"},
    "google.protobuf.FloatValue": {"type": "number", "format": "float"},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64"},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int64", "minimum": 0},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
}
#: A path parameter is one path segment without ``:``, which starts a custom method: so a validator tells
#: ``/v1/executions/{execution}`` from ``/v1/executions/{execution}:watch`` (no resource id contains a colon).
PATH_SEGMENT_PATTERN = "^[^/:]+$"
#: Well-known types that travel as a JSON string or number and so can be query parameters.
QUERY_WELL_KNOWN = {name for name, schema in WELL_KNOWN.items() if schema.get("type") in {"string", "number"}} | {
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",
}
SCALARS: dict[int, dict[str, Any]] = {
    FieldType.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldType.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldType.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldType.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldType.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldType.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldType.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldType.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldType.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldType.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldType.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldType.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldType.TYPE_BOOL: {"type": "boolean"},
    FieldType.TYPE_STRING: {"type": "string"},
    FieldType.TYPE_BYTES: {"type": "string", "format": "byte"},
}
FALLBACK_DESCRIPTIONS = {
    STATUS: "An error: a canonical gRPC `code`, a developer-facing `message` and typed `details` "
    "(an `ErrorInfo` with `reason`, `domain` `exthub.io` and `metadata`; `BadRequest` field violations).",
    ANY: "A typed detail: `@type` names the message type, the other members are its JSON fields.",
}
VARIABLE = re.compile(r"\{([^{}=]+)(?:=([^{}]*))?\}")
MAX_QUERY_DEPTH = 3


class OpenApiError(Exception):
    """The protos cannot be mapped (e.g. an unsupported path template)."""


@dataclass
class MessageInfo:
    """A message with where it is declared (for comments)."""

    proto: descriptor_pb2.DescriptorProto
    file: descriptor_pb2.FileDescriptorProto
    path: tuple[int, ...]


@dataclass
class EnumInfo:
    """An enum with where it is declared (for comments)."""

    proto: descriptor_pb2.EnumDescriptorProto
    file: descriptor_pb2.FileDescriptorProto
    path: tuple[int, ...]


@dataclass
class Builder:
    """Builds the OpenAPI document from a CodeGeneratorRequest."""

    request: plugin_pb2.CodeGeneratorRequest
    options: Options = field(init=False)
    messages: dict[str, MessageInfo] = field(default_factory=dict)
    enums: dict[str, EnumInfo] = field(default_factory=dict)
    comments: dict[str, dict[tuple[int, ...], str]] = field(default_factory=dict)
    resource_patterns: dict[str, list[str]] = field(default_factory=dict)
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.options = Options(self.request.proto_file)
        for file in self.request.proto_file:
            self.comments[file.name] = leading_comments(file)
            prefix = f"{file.package}." if file.package else ""
            for i, message in enumerate(file.message_type):
                self._index_message(message, file, prefix, (4, i))
            for i, enum in enumerate(file.enum_type):
                self.enums[prefix + enum.name] = EnumInfo(enum, file, (5, i))

    def _index_message(
        self,
        message: descriptor_pb2.DescriptorProto,
        file: descriptor_pb2.FileDescriptorProto,
        prefix: str,
        path: tuple[int, ...],
    ) -> None:
        full_name = prefix + message.name
        self.messages[full_name] = MessageInfo(message, file, path)
        resource = self.options.resource(message)
        if resource:
            self.resource_patterns.setdefault(resource["type"], []).extend(resource.get("pattern", []))
        for i, nested in enumerate(message.nested_type):
            self._index_message(nested, file, full_name + ".", (*path, 3, i))
        for i, enum in enumerate(message.enum_type):
            self.enums[f"{full_name}.{enum.name}"] = EnumInfo(enum, file, (*path, 4, i))

    # ----------------------------------------------------------------------------------------- comments
    def comment(self, file: descriptor_pb2.FileDescriptorProto, path: tuple[int, ...]) -> str:
        """The leading comment at a source path, reflowed ('' when there is none)."""
        return reflow(self.comments.get(file.name, {}).get(path, ""))

    # ------------------------------------------------------------------------------------------ schemas
    def ref(self, full_name: str) -> dict[str, Any]:
        """A reference to the component schema of a message or enum (built on demand)."""
        if full_name not in self.schemas and full_name not in self.pending:
            self.pending.append(full_name)
        return {"$ref": f"#/components/schemas/{full_name}"}

    def build_pending(self) -> None:
        """Build every referenced component schema (references may add more)."""
        while self.pending:
            name = self.pending.pop(0)
            if name in self.schemas:
                continue
            if name in self.enums:
                self.schemas[name] = self.enum_schema(name)
            elif name == ANY:
                self.schemas[name] = {
                    "type": "object",
                    "description": FALLBACK_DESCRIPTIONS[ANY],
                    "properties": {"@type": {"type": "string", "description": "The detail's type URL."}},
                    "required": ["@type"],
                    "additionalProperties": True,
                }
            else:
                self.schemas[name] = self.message_schema(name)

    def enum_schema(self, full_name: str) -> dict[str, Any]:
        """An enum as a string schema listing the value names (with their comments)."""
        info = self.enums[full_name]
        lines = [self.comment(info.file, info.path) or f"The {info.proto.name} enum."]
        for i, value in enumerate(info.proto.value):
            value_comment = self.comment(info.file, (*info.path, 2, i)).replace("\n", " ")
            lines.append(f"- `{value.name}`: {value_comment}" if value_comment else f"- `{value.name}`")
        return {
            "type": "string",
            "description": "\n".join([lines[0], "", *lines[1:]]),
            "enum": [value.name for value in info.proto.value],
        }

    def message_schema(self, full_name: str, *, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
        """A message as an object schema; ``skip`` drops fields (by proto name)."""
        info = self.messages.get(full_name)
        if info is None:
            raise OpenApiError(f"unknown message {full_name}")
        schema: dict[str, Any] = {"type": "object"}
        description = self.comment(info.file, info.path) or FALLBACK_DESCRIPTIONS.get(full_name, "")
        if description:
            schema["description"] = description
        properties: dict[str, Any] = {}
        required: list[str] = []
        for i, proto_field in enumerate(info.proto.field):
            if proto_field.name in skip:
                continue
            behaviors = self.options.field_behavior(proto_field)
            properties[proto_field.json_name] = self.field_schema(
                proto_field, self.comment(info.file, (*info.path, 2, i)), behaviors
            )
            if "REQUIRED" in behaviors:
                required.append(proto_field.json_name)
        if properties:
            schema["properties"] = properties
        if required:
            schema["required"] = required
        return schema

    def is_map(self, proto_field: descriptor_pb2.FieldDescriptorProto) -> descriptor_pb2.DescriptorProto | None:
        """The map-entry message of a map field, else None."""
        if proto_field.type != FieldType.TYPE_MESSAGE or proto_field.label != FieldType.LABEL_REPEATED:
            return None
        info = self.messages.get(proto_field.type_name.lstrip("."))
        if info is not None and info.proto.options.map_entry:
            return info.proto
        return None

    def value_schema(self, proto_field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        """The schema of one value of a field (ignoring repetition)."""
        if proto_field.type in (FieldType.TYPE_MESSAGE, FieldType.TYPE_GROUP):
            type_name = proto_field.type_name.lstrip(".")
            if type_name in WELL_KNOWN:
                return dict(WELL_KNOWN[type_name])
            return self.ref(type_name)
        if proto_field.type == FieldType.TYPE_ENUM:
            return self.ref(proto_field.type_name.lstrip("."))
        return dict(SCALARS[proto_field.type])

    def field_schema(
        self, proto_field: descriptor_pb2.FieldDescriptorProto, description: str, behaviors: list[str]
    ) -> dict[str, Any]:
        """The property schema of a field, with its description and behaviors."""
        entry = self.is_map(proto_field)
        if entry is not None:
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self.value_schema(entry.field[1])}
        elif proto_field.label == FieldType.LABEL_REPEATED:
            schema = {"type": "array", "items": self.value_schema(proto_field)}
        else:
            schema = self.value_schema(proto_field)
            if "$ref" in schema:
                schema = {"allOf": [schema]}
        if "IMMUTABLE" in behaviors:
            description = f"{description}\n\nImmutable: can only be set on create.".strip()
        if description:
            schema["description"] = description
        if "OUTPUT_ONLY" in behaviors:
            schema["readOnly"] = True
        if "INPUT_ONLY" in behaviors:
            schema["writeOnly"] = True
        return schema

    # --------------------------------------------------------------------------------------- operations
    def resolve_field(self, message_name: str, dotted: str) -> tuple[descriptor_pb2.FieldDescriptorProto, str, str]:
        """The field at a dotted proto path, its message's full name, and its comment."""
        current = message_name
        parts = dotted.split(".")
        for depth, part in enumerate(parts):
            info = self.messages[current]
            for i, proto_field in enumerate(info.proto.field):
                if proto_field.name == part:
                    if depth == len(parts) - 1:
                        return proto_field, current, self.comment(info.file, (*info.path, 2, i))
                    current = proto_field.type_name.lstrip(".")
                    break
            else:
                raise OpenApiError(f"{message_name} has no field {dotted}")
        raise OpenApiError(f"empty field path in {message_name}")

    def patterns_for(self, proto_field: descriptor_pb2.FieldDescriptorProto, owner: str) -> list[str]:
        """Resource name patterns a path-bound field can hold."""
        reference = self.options.resource_reference(proto_field)
        if reference and reference.get("type"):
            return self.resource_patterns.get(reference["type"], [])
        if reference and reference.get("child_type"):
            children = self.resource_patterns.get(reference["child_type"], [])
            return ["/".join(pattern.split("/")[:-2]) for pattern in children]
        resource = self.options.resource(self.messages[owner].proto)
        if resource and proto_field.name == "name":
            return list(resource.get("pattern", []))
        return []

    def expand_template(self, template: str, request_name: str) -> tuple[str, list[dict[str, Any]], set[str]]:
        """Expand a path template into an OpenAPI path, its path parameters and the bound fields."""
        parameters: list[dict[str, Any]] = []
        bound: set[str] = set()

        def replace(match: re.Match[str]) -> str:
            dotted, segment_pattern = match.group(1), match.group(2) or "*"
            proto_field, owner, comment = self.resolve_field(request_name, dotted)
            bound.add(dotted)
            segments = segment_pattern.split("/")
            if "**" in segments:
                raise OpenApiError(f"'**' path variables are not supported: {template}")
            names = self.wildcard_names(segments, self.patterns_for(proto_field, owner), dotted)
            out = []
            for segment in segments:
                if segment != "*":
                    out.append(segment)
                    continue
                name = names.pop(0)
                parameters.append(
                    {
                        "name": name,
                        "in": "path",
                        "required": True,
                        "description": f"The `{{{name}}}` segment of `{dotted}` ({segment_pattern}). {comment}",
                        "schema": {"type": "string", "pattern": PATH_SEGMENT_PATTERN},
                    }
                )
                out.append(f"{{{name}}}")
            return "/".join(out)

        path = VARIABLE.sub(replace, template)
        seen = [p["name"] for p in parameters]
        if len(seen) != len(set(seen)):
            raise OpenApiError(f"duplicate path parameter names in {template}: {seen}")
        return path, parameters, bound

    @staticmethod
    def wildcard_names(segments: list[str], patterns: list[str], dotted: str) -> list[str]:
        """Names for the ``*`` segments, from a matching resource pattern (else from the collection)."""
        for pattern in patterns:
            parts = pattern.split("/")
            if len(parts) != len(segments):
                continue
            names = []
            for segment, part in zip(segments, parts, strict=True):
                if segment == "*" and part.startswith("{") and part.endswith("}"):
                    names.append(part[1:-1])
                elif segment != part:
                    break
            else:
                return names
        names = []
        for i, segment in enumerate(segments):
            if segment == "*":
                previous = segments[i - 1] if i else ""
                names.append(previous[:-1] if previous.endswith("s") else f"{dotted.replace('.', '_')}_{i}")
        return names

    def query_parameters(
        self, message_name: str, bound: set[str], prefix: str = "", json_prefix: str = "", depth: int = 0
    ) -> list[dict[str, Any]]:
        """Query parameters for the fields of a message that are not bound to the path or the body."""
        info = self.messages[message_name]
        parameters: list[dict[str, Any]] = []
        for i, proto_field in enumerate(info.proto.field):
            dotted = prefix + proto_field.name
            if dotted in bound:
                continue
            behaviors = self.options.field_behavior(proto_field)
            if "OUTPUT_ONLY" in behaviors or self.is_map(proto_field) is not None:
                continue
            type_name = proto_field.type_name.lstrip(".")
            repeated = proto_field.label == FieldType.LABEL_REPEATED
            if proto_field.type == FieldType.TYPE_MESSAGE and type_name not in QUERY_WELL_KNOWN:
                if not repeated and type_name not in WELL_KNOWN and depth < MAX_QUERY_DEPTH:
                    parameters.extend(
                        self.query_parameters(
                            type_name, bound, f"{dotted}.", f"{json_prefix}{proto_field.json_name}.", depth + 1
                        )
                    )
                continue
            value = self.value_schema(proto_field)
            schema = {"type": "array", "items": value} if repeated else value
            parameter: dict[str, Any] = {"name": json_prefix + proto_field.json_name, "in": "query"}
            description = self.comment(info.file, (*info.path, 2, i))
            if description:
                parameter["description"] = description
            if "REQUIRED" in behaviors and depth == 0:
                parameter["required"] = True
            parameter["schema"] = schema
            parameters.append(parameter)
        return parameters

    def operation(
        self,
        service: descriptor_pb2.ServiceDescriptorProto,
        method: descriptor_pb2.MethodDescriptorProto,
        rule: dict[str, Any],
        comment: str,
    ) -> tuple[str, str, dict[str, Any]]:
        """One operation: (OpenAPI path, HTTP method, operation object)."""
        verb, template = http_verb_and_path(rule)
        request_name = method.input_type.lstrip(".")
        response_name = method.output_type.lstrip(".")
        path, parameters, bound = self.expand_template(template, request_name)
        body = rule.get("body", "")
        operation: dict[str, Any] = {"tags": [service.name], "operationId": f"{service.name}_{method.name}"}
        summary = comment.split("\n\n")[0].replace("\n", " ").split(". ")[0].rstrip(".")
        if summary:
            operation["summary"] = summary
        access = self.options.access(method) or {}
        operation["description"] = f"{comment}\n\n{access_text(access)}".strip()
        if body == "*":
            query: list[dict[str, Any]] = []
        else:
            query = self.query_parameters(request_name, bound | ({body} if body else set()))
        if parameters or query:
            operation["parameters"] = parameters + query
        if body == "*":
            body_name = request_name
            self.schemas[body_name] = self.message_schema(request_name, skip=frozenset(bound))
            body_schema = self.schemas[body_name]
            operation["requestBody"] = {
                "required": bool(body_schema.get("required")),
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body_name}"}}},
            }
        elif body:
            body_field, _, body_comment = self.resolve_field(request_name, body)
            request_body: dict[str, Any] = {
                "required": "REQUIRED" in self.options.field_behavior(body_field),
                "content": {"application/json": {"schema": self.value_schema(body_field)}},
            }
            if body_comment:
                request_body["description"] = body_comment
            operation["requestBody"] = request_body
        response_schema = dict(WELL_KNOWN.get(response_name) or self.ref(response_name))
        if method.server_streaming:
            content = {"application/x-ndjson": {"schema": response_schema}}
            description = f"A stream of `{response_name}`, one JSON object per line (newline-delimited JSON)."
        else:
            content = {"application/json": {"schema": response_schema}}
            description = f"OK: `{response_name}`."
        operation["responses"] = {
            "200": {"description": description, "content": content},
            "default": {
                "description": "An error (`google.rpc.Status` with the mapped HTTP status).",
                "content": {"application/json": {"schema": self.ref(STATUS)}},
            },
        }
        if access.get("audience") == "PUBLIC":
            operation["security"] = []
        else:
            operation["security"] = [{"bearerAuth": []}]
        operation["x-exthub-access"] = {
            "audience": access.get("audience", "AUDIENCE_UNSPECIFIED"),
            "roles": access.get("roles", []),
        }
        return path, verb, operation

    def document(self) -> dict[str, Any]:
        """The whole OpenAPI document."""
        paths: dict[str, dict[str, Any]] = {}
        tags: list[dict[str, Any]] = []
        generate = set(self.request.file_to_generate)
        for file in sorted(self.request.proto_file, key=lambda f: f.name):
            if file.name not in generate:
                continue
            for s, service in enumerate(file.service):
                operations = 0
                for m, method in enumerate(service.method):
                    rule = self.options.http_rule(method)
                    if rule is None:
                        continue
                    if rule.get("additional_bindings"):
                        raise OpenApiError(f"{service.name}.{method.name}: additional_bindings are not supported")
                    path, verb, operation = self.operation(service, method, rule, self.comment(file, (6, s, 2, m)))
                    if verb in paths.setdefault(path, {}):
                        raise OpenApiError(f"two operations for {verb.upper()} {path}")
                    paths[path][verb] = operation
                    operations += 1
                if operations:
                    tag = {"name": service.name}
                    service_comment = self.comment(file, (6, s))
                    if service_comment:
                        tag["description"] = service_comment
                    tags.append(tag)
        self.build_pending()
        ordered_paths = {
            path: dict(sorted(paths[path].items(), key=lambda kv: VERB_ORDER.index(kv[0]))) for path in sorted(paths)
        }
        return {
            "openapi": "3.0.3",
            "info": {"title": TITLE, "version": "v1", "description": DESCRIPTION},
            "tags": sorted(tags, key=lambda tag: tag["name"]),
            "paths": ordered_paths,
            "components": {
                "schemas": dict(sorted(self.schemas.items())),
                "securitySchemes": {
                    "bearerAuth": {
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": "JWT",
                        "description": "An Azure AD (Entra ID) access token for the hub's API, or a token of the "
                        "local development issuer (`exthub token`).",
                    }
                },
            },
        }


VERB_ORDER = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]


def reflow(text: str) -> str:
    """Join the hard-wrapped lines of each paragraph (list items and indented lines stay on their own)."""
    paragraphs = []
    for paragraph in text.split("\n\n"):
        lines: list[str] = []
        for line in paragraph.split("\n"):
            if lines and not line.lstrip().startswith(("- ", "* ", "|")) and not line.startswith("  "):
                lines[-1] = f"{lines[-1]} {line.strip()}"
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


class _Dumper(yaml.SafeDumper):
    """YAML dumper that writes multi-line strings as literal blocks (readable descriptions)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def access_text(access: dict[str, Any]) -> str:
    """A sentence describing an access rule, for operation descriptions."""
    audience = access.get("audience")
    if audience == "PUBLIC":
        return "Access: public (no token needed)."
    if audience == "AUTHENTICATED":
        return "Access: any caller with a valid token (ownership and tenancy are checked per resource)."
    if audience == "ROLES":
        roles = ", ".join(f"`{role}`" for role in [*access.get("roles", []), HUB_ADMIN])
        return f"Access: a token with one of the roles {roles}."
    return "Access: refused (no access rule)."


def generate(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    """Build the OpenAPI document for the request."""
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    try:
        document = Builder(request).document()
    except OpenApiError as exc:
        response.error = str(exc)
        return response
    text = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110, default_flow_style=False)
    response.file.add(name=OUTPUT_NAME, content="# Generated by tools/protoc_gen_openapi.py. DO NOT EDIT.\n" + text)
    return response


def main() -> None:
    """Plugin entry point: request on stdin, response on stdout."""
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(generate(request).SerializeToString())


if __name__ == "__main__":
    main()
