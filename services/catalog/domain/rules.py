"""Catalog rules: what a valid extension and version look like, and who may change them."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import urlparse

from exthub.contract.execution import EXECUTION_MODELS
from exthub.contract.roles import AGENT
from services.catalog.domain.model import (
    Extension,
    ExtensionState,
    ExtensionVersion,
    ObjectDefinition,
    ProfileMode,
    VersionState,
)
from services.catalog.domain.versions import parse_version_id
from services.platform.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
)

EXTENSION_ID = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
TAG = re.compile(r"^[\w][\w .+#-]{0,63}$")
OBJECT_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
PROFILE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}/v[0-9]{1,3}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

KNOWN_OBJECT_PROVIDERS = frozenset({"local/v1", "az-blob/v1"})

MAX_SHORT_TEXT = 200
MAX_LONG_TEXT = 10_000
MAX_URI = 2048
MAX_MAP_ENTRIES = 64
MAX_MAP_VALUE = 1024
MAX_TAGS = 32
MAX_PROFILES = 16
MAX_OBJECTS = 32
MAX_STRUCT_BYTES = 16_384
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600


class Caller(Protocol):
    """Who is calling: the parts of an authenticated principal the catalog needs."""

    @property
    def tenant(self) -> str: ...

    @property
    def user(self) -> str: ...

    @property
    def is_admin(self) -> bool: ...

    @property
    def roles(self) -> frozenset[str]: ...


def owner_of(caller: Caller) -> str:
    """The owner string recorded on an extension created by ``caller``."""
    return f"tenants/{caller.tenant}/users/{caller.user}"


def ensure_can_modify(extension: Extension, caller: Caller) -> None:
    """Only the owner or a Hub.Admin may change an extension or its versions."""
    if caller.is_admin or extension.owner == owner_of(caller):
        return
    raise PermissionDenied(
        f"only the owner of {extension.name} or a Hub.Admin may change it",
        reason="NOT_OWNER",
        metadata={"resource": extension.name},
    )


def can_see_extension_settings(extension: Extension, caller: Caller | None) -> bool:
    """A profile's ``extension_settings`` (extension URLs, maybe with credentials) are shown only to the
    extension's owner, a Hub.Admin and the hub's own services (role Agent: the execution service resolving a
    version to run it, the agents), which call the extension.
    ``client_config`` is public."""
    if caller is None:
        return False
    return caller.is_admin or extension.owner == owner_of(caller) or AGENT in caller.roles


def without_extension_settings(version: ExtensionVersion) -> ExtensionVersion:
    """``version`` as a caller who may not see extension settings reads it: every profile's settings empty."""
    if not any(profile.extension_settings for profile in version.profiles):
        return version
    profiles = tuple(dataclasses.replace(profile, extension_settings={}) for profile in version.profiles)
    return dataclasses.replace(version, profiles=profiles)


def validate_extension_id(extension_id: str, *, field: str = "extension_id") -> str:
    """Checks a client-chosen extension id against ``^[a-z][a-z0-9-]{1,62}$``."""
    if not EXTENSION_ID.fullmatch(extension_id):
        raise InvalidArgument.field(field, "must match ^[a-z][a-z0-9-]{1,62}$")
    return extension_id


def validate_extension(extension: Extension, *, fields: Iterable[str], prefix: str = "extension") -> None:
    """Validates the named fields of an extension; all violations are reported together."""
    violations: list[FieldViolation] = []
    wanted = set(fields)

    def text(name: str, value: str, limit: int, *, required: bool = False) -> None:
        if name not in wanted:
            return
        if required and not value.strip():
            violations.append(FieldViolation(f"{prefix}.{name}", "is required"))
        elif len(value) > limit:
            violations.append(FieldViolation(f"{prefix}.{name}", f"at most {limit} characters"))
        elif _CONTROL.search(value):
            violations.append(FieldViolation(f"{prefix}.{name}", "must not contain control characters"))

    text("display_name", extension.display_name, MAX_SHORT_TEXT, required=True)
    text("publisher", extension.publisher, MAX_SHORT_TEXT, required=True)
    text("description", extension.description, MAX_LONG_TEXT)
    text("category", extension.category, MAX_SHORT_TEXT)
    text("subcategory", extension.subcategory, MAX_SHORT_TEXT)
    text("copyright_notice", extension.copyright_notice, MAX_SHORT_TEXT * 2)
    for uri_field in ("logo_uri", "cover_image_uri"):
        if uri_field in wanted:
            violations.extend(_uri(f"{prefix}.{uri_field}", getattr(extension, uri_field)))
    if "tags" in wanted:
        violations.extend(_tags(f"{prefix}.tags", extension.tags))
    if "labels" in wanted:
        violations.extend(_string_map(f"{prefix}.labels", extension.labels, key_pattern=LABEL_KEY))
    if "features" in wanted:
        violations.extend(_string_map(f"{prefix}.features", extension.features, key_pattern=LABEL_KEY))
    if "info_uris" in wanted:
        violations.extend(_string_map(f"{prefix}.info_uris", extension.info_uris, key_pattern=LABEL_KEY))
        for key, value in extension.info_uris.items():
            violations.extend(_uri(f"{prefix}.info_uris[{key!r}]", value))
    if violations:
        raise InvalidArgument("the extension has invalid fields", field_violations=violations)


def validate_version(version: ExtensionVersion, *, prefix: str = "version") -> None:
    """Validates a new version: semver id, profiles, objects, services and limits."""
    parse_version_id(version.version_id)
    violations: list[FieldViolation] = []
    for name, value in (
        ("request_schema_uri", version.request_schema_uri),
        ("response_schema_uri", version.response_schema_uri),
    ):
        violations.extend(_uri(f"{prefix}.{name}", value))
    if len(version.release_notes) > MAX_LONG_TEXT:
        violations.append(FieldViolation(f"{prefix}.release_notes", f"at most {MAX_LONG_TEXT} characters"))
    if not 0 < version.execution_timeout_seconds <= MAX_TIMEOUT_SECONDS:
        violations.append(
            FieldViolation(f"{prefix}.execution_timeout", f"must be positive and at most {MAX_TIMEOUT_SECONDS}s")
        )
    violations.extend(_profiles(prefix, version))
    violations.extend(_objects(f"{prefix}.inputs", version.inputs, inputs=True))
    violations.extend(_objects(f"{prefix}.outputs", version.outputs, inputs=False))
    if len(version.services) > MAX_MAP_ENTRIES:
        violations.append(FieldViolation(f"{prefix}.services", f"at most {MAX_MAP_ENTRIES} entries"))
    for service_name, config in version.services.items():
        if not SERVICE_NAME.fullmatch(service_name):
            violations.append(FieldViolation(f"{prefix}.services", f"{service_name!r} must look like 'name/v1'"))
        if _json_size(config) > MAX_STRUCT_BYTES:
            violations.append(
                FieldViolation(f"{prefix}.services[{service_name!r}]", f"at most {MAX_STRUCT_BYTES} bytes")
            )
    if violations:
        raise InvalidArgument("the version has invalid fields", field_violations=violations)


def ensure_etag_matches(resource: Extension | ExtensionVersion, sent_etag: str) -> None:
    """AIP-154: an etag that was sent must match the stored one; none sent means an unconditional change."""
    if sent_etag and sent_etag != resource.etag:
        raise Aborted(
            f"{resource.name} has changed since it was read (etag mismatch)",
            reason="ETAG_MISMATCH",
            metadata={"resource": resource.name},
        )


def ensure_extension_active(extension: Extension) -> None:
    """Versions can only be added to, or changed on, an extension that is not deleted."""
    if extension.state is not ExtensionState.ACTIVE:
        raise FailedPrecondition(
            f"{extension.name} is deleted; undelete it first",
            reason="EXTENSION_NOT_ACTIVE",
            metadata={"resource": extension.name},
        )


def deprecate(version: ExtensionVersion) -> VersionState:
    """ACTIVE → DEPRECATED; deprecating again is a no-op; a deleted version cannot be deprecated."""
    if version.state is VersionState.DELETED:
        raise FailedPrecondition(
            f"{version.name} is deleted", reason="VERSION_NOT_ACTIVE", metadata={"resource": version.name}
        )
    return VersionState.DEPRECATED


def _profiles(prefix: str, version: ExtensionVersion) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if not version.profiles:
        return [FieldViolation(f"{prefix}.profiles", "at least one execution profile is required")]
    if len(version.profiles) > MAX_PROFILES:
        return [FieldViolation(f"{prefix}.profiles", f"at most {MAX_PROFILES} profiles")]
    seen: set[str] = set()
    for index, profile in enumerate(version.profiles):
        path = f"{prefix}.profiles[{index}]"
        if not PROFILE_NAME.fullmatch(profile.name):
            violations.append(FieldViolation(f"{path}.name", "must match ^[a-z][a-z0-9-]{0,62}$"))
        if profile.name in seen:
            violations.append(FieldViolation(f"{path}.name", f"duplicate profile name {profile.name!r}"))
        seen.add(profile.name)
        if profile.mode is ProfileMode.GATEWAY and profile.execution_model not in EXECUTION_MODELS:
            violations.append(
                FieldViolation(
                    f"{path}.execution_model",
                    f"unknown execution model; known: {', '.join(sorted(EXECUTION_MODELS))}",
                )
            )
        if profile.object_provider not in KNOWN_OBJECT_PROVIDERS:
            violations.append(
                FieldViolation(
                    f"{path}.object_provider",
                    f"unknown object provider; known: {', '.join(sorted(KNOWN_OBJECT_PROVIDERS))}",
                )
            )
        if not profile.supported_priorities:
            violations.append(FieldViolation(f"{path}.supported_priorities", "at least one priority is required"))
        if profile.mode is ProfileMode.DIRECT and not profile.direct_token_ttl_seconds:
            violations.append(FieldViolation(f"{path}.direct_token_ttl", "is required for DIRECT profiles"))
        for duration_name in ("direct_token_ttl_seconds", "queue_timeout_seconds", "call_timeout_seconds"):
            value = getattr(profile, duration_name)
            if value is not None and not 0 < value <= MAX_TIMEOUT_SECONDS:
                violations.append(
                    FieldViolation(f"{path}.{duration_name.removesuffix('_seconds')}", "must be positive")
                )
        retry = profile.retry_policy
        if not 1 <= retry.max_attempts <= 100:
            violations.append(FieldViolation(f"{path}.retry_policy.max_attempts", "must be between 1 and 100"))
        if retry.initial_backoff_seconds < 0 or retry.max_backoff_seconds < retry.initial_backoff_seconds:
            violations.append(FieldViolation(f"{path}.retry_policy", "backoffs must satisfy 0 <= initial <= max"))
        if retry.multiplier < 1:
            violations.append(FieldViolation(f"{path}.retry_policy.multiplier", "must be at least 1"))
        for map_name in ("client_config", "extension_settings"):
            violations.extend(_string_map(f"{path}.{map_name}", getattr(profile, map_name), key_pattern=None))
        for url_key in ("execution_url", "validation_url"):
            url = profile.extension_settings.get(url_key)
            if url is not None:
                violations.extend(_uri(f"{path}.extension_settings[{url_key!r}]", url))
        if profile.mode is ProfileMode.GATEWAY and "execution_url" not in profile.extension_settings:
            violations.append(
                FieldViolation(f"{path}.extension_settings", "'execution_url' is required for GATEWAY profiles")
            )
        if (
            version.supports_validation
            and profile.mode is ProfileMode.GATEWAY
            and "validation_url" not in profile.extension_settings
        ):
            violations.append(
                FieldViolation(
                    f"{path}.extension_settings", "'validation_url' is required when the version supports validation"
                )
            )
    return violations


def _objects(path: str, objects: tuple[ObjectDefinition, ...], *, inputs: bool) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if len(objects) > MAX_OBJECTS:
        return [FieldViolation(path, f"at most {MAX_OBJECTS} objects")]
    seen: set[str] = set()
    for index, obj in enumerate(objects):
        if not OBJECT_NAME.fullmatch(obj.name):
            violations.append(FieldViolation(f"{path}[{index}].name", "must match ^[a-z][a-z0-9_.-]{0,62}$"))
        if obj.name in seen:
            violations.append(FieldViolation(f"{path}[{index}].name", f"duplicate object name {obj.name!r}"))
        seen.add(obj.name)
        if not inputs and obj.required:
            violations.append(FieldViolation(f"{path}[{index}].required", "only inputs can be required"))
        violations.extend(_uri(f"{path}[{index}].type_uri", obj.type_uri))
        if len(obj.description) > MAX_LONG_TEXT or len(obj.type_name) > MAX_SHORT_TEXT:
            violations.append(FieldViolation(f"{path}[{index}]", "description or type_name too long"))
    return violations


def _uri(path: str, value: str) -> list[FieldViolation]:
    if not value:
        return []
    if len(value) > MAX_URI:
        return [FieldViolation(path, f"at most {MAX_URI} characters")]
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or _CONTROL.search(value) or " " in value:
        return [FieldViolation(path, "must be an absolute http(s) URI")]
    return []


def _tags(path: str, tags: tuple[str, ...]) -> list[FieldViolation]:
    if len(tags) > MAX_TAGS:
        return [FieldViolation(path, f"at most {MAX_TAGS} tags")]
    violations = [
        FieldViolation(f"{path}[{index}]", "1-64 characters: letters, digits, space, . + # -")
        for index, tag in enumerate(tags)
        if not TAG.fullmatch(tag)
    ]
    if len(set(tags)) != len(tags):
        violations.append(FieldViolation(path, "tags must be unique"))
    return violations


def _string_map(path: str, values: Mapping[str, str], *, key_pattern: re.Pattern[str] | None) -> list[FieldViolation]:
    if len(values) > MAX_MAP_ENTRIES:
        return [FieldViolation(path, f"at most {MAX_MAP_ENTRIES} entries")]
    violations: list[FieldViolation] = []
    for key, value in values.items():
        if key_pattern is not None and not key_pattern.fullmatch(key):
            violations.append(FieldViolation(f"{path}[{key!r}]", f"key must match {key_pattern.pattern}"))
        elif key_pattern is None and not 0 < len(key) <= MAX_SHORT_TEXT:
            violations.append(FieldViolation(f"{path}[{key!r}]", f"key must have 1-{MAX_SHORT_TEXT} characters"))
        if len(value) > MAX_MAP_VALUE:
            violations.append(FieldViolation(f"{path}[{key!r}]", f"value at most {MAX_MAP_VALUE} characters"))
    return violations


def _json_size(value: Any) -> int:
    import json

    return len(json.dumps(value, separators=(",", ":")))
