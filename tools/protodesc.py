"""Read the custom options of a set of proto files without importing generated code.

The OpenAPI plugin and the contract tests both need ``google.api.http``, ``google.api.field_behavior``,
``google.api.resource``/``resource_reference`` and ``exthub.type.v1.access`` from descriptors (a
``CodeGeneratorRequest`` or ``gen/descriptor/exthub.binpb``). ``Options`` loads the files into a private
descriptor pool, builds dynamic option classes (with every extension of those files registered) and
re-parses each options message with them, returning plain Python values.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

HTTP = "google.api.http"
FIELD_BEHAVIOR = "google.api.field_behavior"
RESOURCE = "google.api.resource"
RESOURCE_REFERENCE = "google.api.resource_reference"
ACCESS = "exthub.type.v1.access"
HTTP_VERBS = ("get", "put", "post", "delete", "patch")


class Options:
    """Custom options of the given files (which must include their imports, dependencies first)."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        names = []
        for file in files:
            self.pool.Add(file)
            names.append(file.name)
        message_factory.GetMessageClassesForFiles(names, self.pool)  # registers the extensions
        self._classes: dict[str, type[Message]] = {}

    def _parse(self, options: Message, kind: str) -> Message:
        cls = self._classes.get(kind)
        if cls is None:
            cls = message_factory.GetMessageClass(self.pool.FindMessageTypeByName(f"google.protobuf.{kind}"))
            self._classes[kind] = cls
        return cls.FromString(options.SerializeToString())

    def _extension(self, options: Message, kind: str, name: str) -> Any:
        try:
            # Typed as Any: the stubs only accept generated extension descriptors, not pool-found ones.
            extension: Any = self.pool.FindExtensionByName(name)
        except KeyError:
            return None
        parsed = self._parse(options, kind)
        if extension.is_repeated:  # repeated enum (field_behavior)
            values: list[int] = list(parsed.Extensions[extension])
            return [extension.enum_type.values_by_number[v].name for v in values]
        if not parsed.HasExtension(extension):
            return None
        return json_format.MessageToDict(parsed.Extensions[extension], preserving_proto_field_name=True)

    def http_rule(self, method: descriptor_pb2.MethodDescriptorProto) -> dict[str, Any] | None:
        """The ``google.api.http`` rule as a dict (``{"get": "/v1/...", "body": "..."}``), or None."""
        rule: dict[str, Any] | None = self._extension(method.options, "MethodOptions", HTTP)
        return rule

    def access(self, method: descriptor_pb2.MethodDescriptorProto) -> dict[str, Any] | None:
        """The ``exthub.type.v1.access`` rule as a dict (``{"audience": "ROLES", ...}``), or None."""
        rule: dict[str, Any] | None = self._extension(method.options, "MethodOptions", ACCESS)
        return rule

    def field_behavior(self, field: descriptor_pb2.FieldDescriptorProto) -> list[str]:
        """The ``google.api.field_behavior`` names of a field (``["REQUIRED", "IMMUTABLE"]``)."""
        behaviors: list[str] | None = self._extension(field.options, "FieldOptions", FIELD_BEHAVIOR)
        return behaviors or []

    def resource(self, message: descriptor_pb2.DescriptorProto) -> dict[str, Any] | None:
        """The ``google.api.resource`` descriptor of a message, or None."""
        resource: dict[str, Any] | None = self._extension(message.options, "MessageOptions", RESOURCE)
        return resource

    def resource_reference(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any] | None:
        """The ``google.api.resource_reference`` of a field, or None."""
        reference: dict[str, Any] | None = self._extension(field.options, "FieldOptions", RESOURCE_REFERENCE)
        return reference


def http_verb_and_path(rule: dict[str, Any]) -> tuple[str, str]:
    """The HTTP verb and path template of a ``google.api.http`` rule dict."""
    for verb in HTTP_VERBS:
        if verb in rule:
            return verb, str(rule[verb])
    if "custom" in rule:
        return str(rule["custom"]["kind"]).lower(), str(rule["custom"]["path"])
    raise ValueError(f"http rule without a pattern: {rule}")


def leading_comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Leading comments of a file by source-code-info path (empty when there is no source info)."""
    comments: dict[tuple[int, ...], str] = {}
    for location in file.source_code_info.location:
        if location.leading_comments.strip():
            comments[tuple(location.path)] = clean_comment(location.leading_comments)
    return comments


def clean_comment(text: str) -> str:
    """A proto comment as documentation text: common indentation removed, paragraphs kept."""
    lines = [line[1:] if line.startswith(" ") else line for line in text.strip("\n").split("\n")]
    return "\n".join(line.rstrip() for line in lines).strip()
