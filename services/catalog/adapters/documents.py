"""Mapping between catalog aggregates and store documents (one partition per extension).

The extension and all its versions share the partition ``extension_id``: listing an extension's versions
is a single-partition query, and a Cosmos DB container partitioned on it keeps every access path cheap.
"""

from __future__ import annotations

from typing import Any

from exthub.contract.execution import DEFAULT_EXECUTION_TIMEOUT
from services.catalog.domain import versions as semver
from services.catalog.domain.model import (
    ExecutionProfile,
    Extension,
    ExtensionState,
    ExtensionVersion,
    ObjectDefinition,
    Priority,
    ProfileMode,
    RetryPolicy,
    VersionState,
)
from services.platform.docstore.port import Document

COLLECTION = "catalog"
EXTENSION_DOC_ID = "extension"
KIND_EXTENSION = "extension"
KIND_VERSION = "version"


def version_doc_id(version_id: str) -> str:
    """The document id of a version inside its extension's partition."""
    return f"version:{version_id}"


def extension_to_body(extension: Extension) -> dict[str, Any]:
    """The stored JSON of an extension (its etag lives on the document, not in the body)."""
    return {
        "kind": KIND_EXTENSION,
        "extension_id": extension.extension_id,
        "display_name": extension.display_name,
        "publisher": extension.publisher,
        "description": extension.description,
        "category": extension.category,
        "subcategory": extension.subcategory,
        "tags": list(extension.tags),
        "logo_uri": extension.logo_uri,
        "cover_image_uri": extension.cover_image_uri,
        "copyright_notice": extension.copyright_notice,
        "info_uris": dict(extension.info_uris),
        "features": dict(extension.features),
        "labels": dict(extension.labels),
        "state": extension.state.value,
        "owner": extension.owner,
        "create_time": extension.create_time,
        "update_time": extension.update_time,
        "delete_time": extension.delete_time,
    }


def extension_from_document(document: Document) -> Extension:
    """Rebuilds an extension from its document."""
    body = document.body
    return Extension(
        extension_id=body["extension_id"],
        display_name=body["display_name"],
        publisher=body.get("publisher", ""),
        description=body.get("description", ""),
        category=body.get("category", ""),
        subcategory=body.get("subcategory", ""),
        tags=tuple(body.get("tags", ())),
        logo_uri=body.get("logo_uri", ""),
        cover_image_uri=body.get("cover_image_uri", ""),
        copyright_notice=body.get("copyright_notice", ""),
        info_uris=dict(body.get("info_uris", {})),
        features=dict(body.get("features", {})),
        labels=dict(body.get("labels", {})),
        state=ExtensionState(body["state"]),
        owner=body.get("owner", ""),
        create_time=body.get("create_time", ""),
        update_time=body.get("update_time", ""),
        delete_time=body.get("delete_time", ""),
        etag=document.etag,
    )


def version_to_body(version: ExtensionVersion) -> dict[str, Any]:
    """The stored JSON of a version, with its semver sort key and prerelease flag for queries."""
    return {
        "kind": KIND_VERSION,
        "extension_id": version.extension_id,
        "version_id": version.version_id,
        "semver_key": semver.sort_key(version.version_id),
        "prerelease": semver.is_prerelease(version.version_id),
        "release_notes": version.release_notes,
        "request_schema_uri": version.request_schema_uri,
        "response_schema_uri": version.response_schema_uri,
        "long_running": version.long_running,
        "supports_validation": version.supports_validation,
        "execution_timeout_seconds": version.execution_timeout_seconds,
        "profiles": [_profile_to_body(p) for p in version.profiles],
        "inputs": [_object_to_body(o) for o in version.inputs],
        "outputs": [_object_to_body(o) for o in version.outputs],
        "services": version.services,
        "state": version.state.value,
        "create_time": version.create_time,
        "update_time": version.update_time,
        "delete_time": version.delete_time,
    }


def version_from_document(document: Document, *, latest_version_id: str | None = None) -> ExtensionVersion:
    """Rebuilds a version; ``latest`` is set when it is the extension's latest version."""
    body = document.body
    return ExtensionVersion(
        extension_id=body["extension_id"],
        version_id=body["version_id"],
        release_notes=body.get("release_notes", ""),
        request_schema_uri=body.get("request_schema_uri", ""),
        response_schema_uri=body.get("response_schema_uri", ""),
        long_running=bool(body.get("long_running", False)),
        supports_validation=bool(body.get("supports_validation", False)),
        execution_timeout_seconds=float(
            body.get("execution_timeout_seconds", DEFAULT_EXECUTION_TIMEOUT.total_seconds())
        ),
        profiles=tuple(_profile_from_body(p) for p in body.get("profiles", ())),
        inputs=tuple(_object_from_body(o) for o in body.get("inputs", ())),
        outputs=tuple(_object_from_body(o) for o in body.get("outputs", ())),
        services=dict(body.get("services", {})),
        state=VersionState(body["state"]),
        create_time=body.get("create_time", ""),
        update_time=body.get("update_time", ""),
        delete_time=body.get("delete_time", ""),
        etag=document.etag,
        latest=latest_version_id == body["version_id"],
    )


def _profile_to_body(profile: ExecutionProfile) -> dict[str, Any]:
    retry = profile.retry_policy
    return {
        "name": profile.name,
        "description": profile.description,
        "execution_model": profile.execution_model,
        "mode": profile.mode.value,
        "object_provider": profile.object_provider,
        "supported_priorities": [p.value for p in profile.supported_priorities],
        "client_config": dict(profile.client_config),
        "extension_settings": dict(profile.extension_settings),
        "direct_token_ttl_seconds": profile.direct_token_ttl_seconds,
        "retry_policy": {
            "max_attempts": retry.max_attempts,
            "initial_backoff_seconds": retry.initial_backoff_seconds,
            "max_backoff_seconds": retry.max_backoff_seconds,
            "multiplier": retry.multiplier,
        },
        "queue_timeout_seconds": profile.queue_timeout_seconds,
        "call_timeout_seconds": profile.call_timeout_seconds,
        "active": profile.active,
    }


def _profile_from_body(body: dict[str, Any]) -> ExecutionProfile:
    retry = body.get("retry_policy", {})
    return ExecutionProfile(
        name=body["name"],
        description=body.get("description", ""),
        execution_model=body.get("execution_model", ""),
        mode=ProfileMode(body.get("mode", ProfileMode.GATEWAY.value)),
        object_provider=body.get("object_provider", "local/v1"),
        supported_priorities=tuple(Priority(p) for p in body.get("supported_priorities", ())),
        client_config=dict(body.get("client_config", {})),
        extension_settings=dict(body.get("extension_settings", {})),
        direct_token_ttl_seconds=body.get("direct_token_ttl_seconds"),
        retry_policy=RetryPolicy(
            max_attempts=int(retry.get("max_attempts", 3)),
            initial_backoff_seconds=float(retry.get("initial_backoff_seconds", 1.0)),
            max_backoff_seconds=float(retry.get("max_backoff_seconds", 60.0)),
            multiplier=float(retry.get("multiplier", 2.0)),
        ),
        queue_timeout_seconds=body.get("queue_timeout_seconds"),
        call_timeout_seconds=body.get("call_timeout_seconds"),
        active=bool(body.get("active", True)),
    )


def _object_to_body(obj: ObjectDefinition) -> dict[str, Any]:
    return {
        "name": obj.name,
        "description": obj.description,
        "type_name": obj.type_name,
        "type_uri": obj.type_uri,
        "required": obj.required,
    }


def _object_from_body(body: dict[str, Any]) -> ObjectDefinition:
    return ObjectDefinition(
        name=body["name"],
        description=body.get("description", ""),
        type_name=body.get("type_name", ""),
        type_uri=body.get("type_uri", ""),
        required=bool(body.get("required", False)),
    )
