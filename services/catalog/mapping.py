"""Translation between catalog protos and domain objects (the servicer's only job besides dispatch)."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from google.protobuf import duration_pb2, struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from exthub.catalog.v1 import catalog_service_pb2 as service_pb2
from exthub.catalog.v1 import resources_pb2
from exthub.contract.execution import DEFAULT_EXECUTION_TIMEOUT
from exthub.contract.structs import struct_to_dict
from exthub.type.v1 import types_pb2
from services.catalog.domain.model import (
    ExecutionProfile,
    Extension,
    ExtensionVersion,
    ObjectDefinition,
    Priority,
    ProfileMode,
    RetryPolicy,
)
from services.catalog.search import FacetValue
from services.platform.errors import InvalidArgument
from services.platform.prototime import storage_timestamp

_EXTENSION_NAME = re.compile(r"^extensions/([a-z][a-z0-9-]{1,62})$")
_VERSION_NAME = re.compile(r"^extensions/([a-z][a-z0-9-]{1,62})/versions/([0-9A-Za-z.+-]{1,128})$")
_DEFAULT_RETRY = RetryPolicy()


def parse_extension_name(name: str, *, field: str = "name") -> str:
    """``extensions/{extension}`` → the extension id, or INVALID_ARGUMENT."""
    match = _EXTENSION_NAME.fullmatch(name)
    if not match:
        raise InvalidArgument.field(field, "must be of the form extensions/{extension}")
    return match.group(1)


def parse_version_name(name: str, *, field: str = "name") -> tuple[str, str]:
    """``extensions/{extension}/versions/{version}`` → (extension id, version id), or INVALID_ARGUMENT."""
    match = _VERSION_NAME.fullmatch(name)
    if not match:
        raise InvalidArgument.field(field, "must be of the form extensions/{extension}/versions/{version}")
    return match.group(1), match.group(2)


def _duration(seconds: float | None) -> duration_pb2.Duration | None:
    if seconds is None:
        return None
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def _seconds(duration: duration_pb2.Duration, *, present: bool) -> float | None:
    return duration.ToNanoseconds() / 1e9 if present else None


def extension_from_proto(message: resources_pb2.Extension, *, extension_id: str = "") -> Extension:
    """The client-settable fields of an extension message (output-only fields are ignored)."""
    return Extension(
        extension_id=extension_id,
        display_name=message.display_name,
        publisher=message.publisher,
        description=message.description,
        category=message.category,
        subcategory=message.subcategory,
        tags=tuple(message.tags),
        logo_uri=message.logo_uri,
        cover_image_uri=message.cover_image_uri,
        copyright_notice=message.copyright_notice,
        info_uris=dict(message.info_uris),
        features=dict(message.features),
        labels=dict(message.labels),
        etag=message.etag,
    )


def extension_to_proto(extension: Extension) -> resources_pb2.Extension:
    """The full resource as clients see it."""
    return resources_pb2.Extension(
        name=extension.name,
        display_name=extension.display_name,
        publisher=extension.publisher,
        description=extension.description,
        category=extension.category,
        subcategory=extension.subcategory,
        tags=list(extension.tags),
        logo_uri=extension.logo_uri,
        cover_image_uri=extension.cover_image_uri,
        copyright_notice=extension.copyright_notice,
        info_uris=extension.info_uris,
        features=extension.features,
        labels=extension.labels,
        state=resources_pb2.Extension.State.Value(extension.state.value),
        owner=extension.owner,
        create_time=storage_timestamp(extension.create_time),
        update_time=storage_timestamp(extension.update_time),
        delete_time=storage_timestamp(extension.delete_time),
        etag=extension.etag,
    )


def populated_extension_fields(message: resources_pb2.Extension) -> list[str]:
    """AIP-134 without a mask: the fields the client populated."""
    return [descriptor.name for descriptor, _ in message.ListFields()]


def _priority_from_proto(value: int, *, field: str) -> Priority:
    known = value in types_pb2.Priority.values()
    name = types_pb2.Priority.Name(types_pb2.Priority.ValueType(value)) if known else ""
    if name not in Priority.__members__:
        raise InvalidArgument.field(field, "must be LOW, NORMAL or HIGH")
    return Priority(name)


def _profile_from_proto(message: resources_pb2.ExecutionProfile, index: int) -> ExecutionProfile:
    path = f"version.profiles[{index}]"
    retry = message.retry_policy
    has_retry = message.HasField("retry_policy")
    mode = resources_pb2.ExecutionProfile.Mode.Name(message.mode)
    return ExecutionProfile(
        name=message.name,
        description=message.description,
        execution_model=message.execution_model,
        mode=ProfileMode.DIRECT if mode == "DIRECT" else ProfileMode.GATEWAY,
        object_provider=message.object_provider or "local/v1",
        supported_priorities=tuple(
            _priority_from_proto(p, field=f"{path}.supported_priorities") for p in message.supported_priorities
        )
        or (Priority.NORMAL,),
        client_config=dict(message.client_config),
        extension_settings=dict(message.extension_settings),
        direct_token_ttl_seconds=_seconds(message.direct_token_ttl, present=message.HasField("direct_token_ttl")),
        retry_policy=RetryPolicy(
            max_attempts=retry.max_attempts or _DEFAULT_RETRY.max_attempts,
            initial_backoff_seconds=_seconds(retry.initial_backoff, present=retry.HasField("initial_backoff"))
            or _DEFAULT_RETRY.initial_backoff_seconds,
            max_backoff_seconds=_seconds(retry.max_backoff, present=retry.HasField("max_backoff"))
            or _DEFAULT_RETRY.max_backoff_seconds,
            multiplier=retry.multiplier or _DEFAULT_RETRY.multiplier,
        )
        if has_retry
        else _DEFAULT_RETRY,
        queue_timeout_seconds=_seconds(message.queue_timeout, present=message.HasField("queue_timeout")),
        call_timeout_seconds=_seconds(message.call_timeout, present=message.HasField("call_timeout")),
        active=message.active if message.HasField("active") else True,
    )


def _profile_to_proto(profile: ExecutionProfile) -> resources_pb2.ExecutionProfile:
    retry = profile.retry_policy
    return resources_pb2.ExecutionProfile(
        name=profile.name,
        description=profile.description,
        execution_model=profile.execution_model,
        mode=resources_pb2.ExecutionProfile.Mode.Value(profile.mode.value),
        object_provider=profile.object_provider,
        supported_priorities=[types_pb2.Priority.Value(p.value) for p in profile.supported_priorities],
        client_config=profile.client_config,
        extension_settings=profile.extension_settings,
        direct_token_ttl=_duration(profile.direct_token_ttl_seconds),
        retry_policy=resources_pb2.RetryPolicy(
            max_attempts=retry.max_attempts,
            initial_backoff=_duration(retry.initial_backoff_seconds),
            max_backoff=_duration(retry.max_backoff_seconds),
            multiplier=retry.multiplier,
        ),
        queue_timeout=_duration(profile.queue_timeout_seconds),
        call_timeout=_duration(profile.call_timeout_seconds),
        active=profile.active,
    )


def _object_from_proto(message: types_pb2.ObjectDefinition) -> ObjectDefinition:
    return ObjectDefinition(
        name=message.name,
        description=message.description,
        type_name=message.type_name,
        type_uri=message.type_uri,
        required=message.required,
    )


def _object_to_proto(obj: ObjectDefinition) -> types_pb2.ObjectDefinition:
    return types_pb2.ObjectDefinition(
        name=obj.name,
        description=obj.description,
        type_name=obj.type_name,
        type_uri=obj.type_uri,
        required=obj.required,
    )


def version_from_proto(message: resources_pb2.ExtensionVersion) -> ExtensionVersion:
    """The client-settable fields of a new version."""
    services: dict[str, dict[str, Any]] = {name: struct_to_dict(config) for name, config in message.services.items()}
    timeout = _seconds(message.execution_timeout, present=message.HasField("execution_timeout"))
    return ExtensionVersion(
        extension_id="",
        version_id="",
        release_notes=message.release_notes,
        request_schema_uri=message.request_schema_uri,
        response_schema_uri=message.response_schema_uri,
        long_running=message.long_running,
        supports_validation=message.supports_validation,
        execution_timeout_seconds=DEFAULT_EXECUTION_TIMEOUT.total_seconds() if timeout is None else timeout,
        profiles=tuple(_profile_from_proto(p, i) for i, p in enumerate(message.profiles)),
        inputs=tuple(_object_from_proto(o) for o in message.inputs),
        outputs=tuple(_object_from_proto(o) for o in message.outputs),
        services=services,
    )


def version_to_proto(version: ExtensionVersion) -> resources_pb2.ExtensionVersion:
    """The full version resource as clients see it."""
    services = {}
    for name, config in version.services.items():
        struct = struct_pb2.Struct()
        struct.update(config)
        services[name] = struct
    return resources_pb2.ExtensionVersion(
        name=version.name,
        release_notes=version.release_notes,
        request_schema_uri=version.request_schema_uri,
        response_schema_uri=version.response_schema_uri,
        long_running=version.long_running,
        supports_validation=version.supports_validation,
        execution_timeout=_duration(version.execution_timeout_seconds),
        profiles=[_profile_to_proto(p) for p in version.profiles],
        inputs=[_object_to_proto(o) for o in version.inputs],
        outputs=[_object_to_proto(o) for o in version.outputs],
        services=services,
        state=resources_pb2.ExtensionVersion.State.Value(version.state.value),
        latest=version.latest,
        create_time=storage_timestamp(version.create_time),
        update_time=storage_timestamp(version.update_time),
        delete_time=storage_timestamp(version.delete_time),
        etag=version.etag,
    )


def facets_to_proto(facets: dict[str, list[FacetValue]]) -> list[service_pb2.Facet]:
    """Facets in the API's response shape: ``{field, values: [{value, count}]}``."""
    return [
        service_pb2.Facet(field=name, values=[service_pb2.FacetValue(value=v.value, count=v.count) for v in values])
        for name, values in facets.items()
    ]


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class ExtensionMessages:
    """Extension messages by ``(extension id, etag)``, serialized once as entries of one repeated field.

    A stored extension's etag changes on every write, so it names one content: the message built for it
    once serves every later response that shows that content (search pages repeat the same extensions).
    Each entry is kept in wire format as one element of the response's repeated field (tag, length,
    message), so a whole page is merged into the response by a single parse; least recently used entries
    are dropped first.
    """

    def __init__(self, field: FieldDescriptor, entries: int = 16_384) -> None:
        if field.message_type is not resources_pb2.Extension.DESCRIPTOR or not field.is_repeated:
            raise ValueError(f"{field.full_name} is not a repeated Extension field")
        self._tag = _varint(field.number << 3 | 2)  # wire type 2: length-delimited
        self._entries = entries
        self._framed: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def merge_into(self, response: Message, extensions: Iterable[Extension]) -> None:
        """Appends the message of each extension (as :func:`extension_to_proto` builds it), in order."""
        response.MergeFromString(b"".join(self._entry(extension) for extension in extensions))

    def _entry(self, extension: Extension) -> bytes:
        key = (extension.extension_id, extension.etag)
        framed = self._framed.get(key) if extension.etag else None
        if framed is not None:
            self._framed.move_to_end(key)
            return framed
        message = extension_to_proto(extension).SerializeToString()
        framed = self._tag + _varint(len(message)) + message
        if extension.etag:
            self._framed[key] = framed
            if len(self._framed) > self._entries:
                self._framed.popitem(last=False)
        return framed
