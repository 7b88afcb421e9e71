"""The catalog's aggregates: an extension and its immutable versions."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from exthub.contract.execution import DEFAULT_EXECUTION_TIMEOUT


class ExtensionState(enum.StrEnum):
    """Lifecycle of an extension; DELETED is a soft delete that can be undone."""

    ACTIVE = "ACTIVE"
    DELETED = "DELETED"


class VersionState(enum.StrEnum):
    """Lifecycle of a version: the only part of a version that changes after creation."""

    ACTIVE = "ACTIVE"
    DEPRECATED = "DEPRECATED"
    DELETED = "DELETED"


class ProfileMode(enum.StrEnum):
    """Whether the hub runs the extension (GATEWAY) or hands the client a signed token (DIRECT)."""

    GATEWAY = "GATEWAY"
    DIRECT = "DIRECT"


class Priority(enum.StrEnum):
    """Execution priorities a profile may support."""

    LOW = "LOW"
    NORMAL = "NORMAL"
    HIGH = "HIGH"


@dataclass(frozen=True)
class Extension:
    """A catalog entry, identified by ``extensions/{extension_id}``."""

    extension_id: str
    display_name: str
    publisher: str = ""
    description: str = ""
    category: str = ""
    subcategory: str = ""
    tags: tuple[str, ...] = ()
    logo_uri: str = ""
    cover_image_uri: str = ""
    copyright_notice: str = ""
    info_uris: dict[str, str] = field(default_factory=dict)
    features: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    state: ExtensionState = ExtensionState.ACTIVE
    owner: str = ""
    create_time: str = ""
    update_time: str = ""
    delete_time: str = ""
    etag: str = ""

    @property
    def name(self) -> str:
        """The resource name."""
        return f"extensions/{self.extension_id}"


# Fields a client may set on create and change with an update mask (proto field names).
MUTABLE_EXTENSION_FIELDS: frozenset[str] = frozenset(
    {
        "display_name",
        "publisher",
        "description",
        "category",
        "subcategory",
        "tags",
        "logo_uri",
        "cover_image_uri",
        "copyright_notice",
        "info_uris",
        "features",
        "labels",
    }
)
# Output-only fields: ignored when named in an update mask (AIP-134).
OUTPUT_ONLY_EXTENSION_FIELDS: frozenset[str] = frozenset(
    {"name", "state", "owner", "create_time", "update_time", "delete_time", "etag"}
)


@dataclass(frozen=True)
class RetryPolicy:
    """How an asynchronous execution is retried after a transient failure."""

    max_attempts: int = 3
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    multiplier: float = 2.0


@dataclass(frozen=True)
class ObjectDefinition:
    """An input or output object a version declares."""

    name: str
    description: str = ""
    type_name: str = ""
    type_uri: str = ""
    required: bool = False


@dataclass(frozen=True)
class ExecutionProfile:
    """How a version is executed."""

    name: str
    execution_model: str
    description: str = ""
    mode: ProfileMode = ProfileMode.GATEWAY
    object_provider: str = "local/v1"
    supported_priorities: tuple[Priority, ...] = (Priority.NORMAL,)
    client_config: dict[str, str] = field(default_factory=dict)
    extension_settings: dict[str, str] = field(default_factory=dict)
    direct_token_ttl_seconds: float | None = None
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    queue_timeout_seconds: float | None = None
    call_timeout_seconds: float | None = None
    active: bool = True


@dataclass(frozen=True)
class ExtensionVersion:
    """An immutable version ``extensions/{extension_id}/versions/{version_id}``."""

    extension_id: str
    version_id: str
    release_notes: str = ""
    request_schema_uri: str = ""
    response_schema_uri: str = ""
    long_running: bool = False
    supports_validation: bool = False
    execution_timeout_seconds: float = DEFAULT_EXECUTION_TIMEOUT.total_seconds()
    profiles: tuple[ExecutionProfile, ...] = ()
    inputs: tuple[ObjectDefinition, ...] = ()
    outputs: tuple[ObjectDefinition, ...] = ()
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: VersionState = VersionState.ACTIVE
    create_time: str = ""
    update_time: str = ""
    delete_time: str = ""
    etag: str = ""
    latest: bool = False

    @property
    def name(self) -> str:
        """The resource name."""
        return f"extensions/{self.extension_id}/versions/{self.version_id}"
