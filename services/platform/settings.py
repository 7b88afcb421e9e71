"""The one settings model: environment variables ``EXTHUB_…``, nested sections with ``__``.

Examples: ``EXTHUB_BACKEND=azure``, ``EXTHUB_AUTH__ISSUERS='["https://login.microsoftonline.com/T/v2.0"]'``
(a JSON array or a comma-separated list), ``EXTHUB_AZURE__COSMOS_ENDPOINT=https://….documents.azure.com``.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from exthub.contract.dev_tokens import DEV_AUDIENCE, DEV_ISSUER, dev_jwks_path
from exthub.contract.keyfiles import read_or_create_once
from services.platform.egress import EgressPolicy, parse_allow_entry

__all__ = [
    "DEFAULT_ALGORITHMS",
    "AuthSettings",
    "AzureSettings",
    "EgressSettings",
    "EventsSettings",
    "Settings",
    "TelemetrySettings",
]

DEFAULT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
_ACCEPTABLE_ALGORITHMS = frozenset((*DEFAULT_ALGORITHMS, "EdDSA"))
PAGE_TOKEN_KEY_FILE = Path("secrets", "page-token.key")


def _split_list(value: Any) -> Any:
    """Accept a JSON array or a comma-separated string for list settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], NoDecode]


class AuthSettings(BaseModel):
    """Bearer-token verification. Empty on the local backend means the development issuer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuers: StrList = Field(default_factory=list, description="Accepted `iss` values (exact match).")
    audiences: StrList = Field(default_factory=list, description="Accepted `aud` values (app id URI, client id).")
    jwks_file: Path | None = Field(default=None, description="Local JWKS file; re-read when it changes.")
    jwks_uri: str | None = Field(default=None, description="Remote JWKS URL (e.g. Entra ID discovery keys).")
    jwks_cache_seconds: int = Field(default=300, ge=1, le=86_400)
    clock_skew_seconds: int = Field(default=60, ge=0, le=600)
    allowed_algorithms: StrList = Field(default_factory=lambda: list(DEFAULT_ALGORITHMS))

    _split = field_validator("issuers", "audiences", "allowed_algorithms", mode="before")(_split_list)

    @field_validator("allowed_algorithms")
    @classmethod
    def _only_asymmetric(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one algorithm must be allowed")
        for alg in value:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ValueError(f"algorithm {alg!r} is refused: only asymmetric algorithms are allowed")
            if alg not in _ACCEPTABLE_ALGORITHMS:
                raise ValueError(f"unknown algorithm {alg!r}; allowed: {sorted(_ACCEPTABLE_ALGORITHMS)}")
        return value

    @field_validator("jwks_uri")
    @classmethod
    def _https_uri(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ValueError("jwks_uri must use https (plain http only on loopback)")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> AuthSettings:
        if self.jwks_file is not None and self.jwks_uri is not None:
            raise ValueError("set only one of jwks_file and jwks_uri")
        return self

    @property
    def configured(self) -> bool:
        """True when issuers, audiences and a key source are all set."""
        return bool(self.issuers and self.audiences and (self.jwks_file or self.jwks_uri))

    @classmethod
    def development(cls, data_dir: Path) -> AuthSettings:
        """The local development issuer's settings (its JWKS lives in ``data_dir``)."""
        return cls(issuers=[DEV_ISSUER], audiences=[DEV_AUDIENCE], jwks_file=dev_jwks_path(data_dir))


_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_BLOB_CONTAINER = re.compile(r"^(?=.{3,63}$)[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*$")
_NAMESPACE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?$")
_DATABASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
_SCOPE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^\s?#]+/\.default$")


def _azure_endpoint(value: str | None, variable: str) -> str | None:
    """An Azure data-plane endpoint: absolute https URL (http only on loopback), no credentials, query or
    fragment (a SAS or key in a URL would be a secret in the settings); a trailing slash is dropped."""
    if value is None:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{variable} must be an absolute https URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise ValueError(f"{variable} must use https (plain http only on loopback)")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"{variable} must not carry credentials, a query (no SAS) or a fragment")
    return value.strip().rstrip("/")


#: The Azure endpoints each service uses (a Deployment gets only its own; ``exthub up`` needs them all).
AZURE_ENDPOINTS_BY_SERVICE: dict[str, tuple[str, ...]] = {
    "catalog": ("EXTHUB_AZURE__COSMOS_ENDPOINT",),
    "execution": (
        "EXTHUB_AZURE__COSMOS_ENDPOINT",
        "EXTHUB_AZURE__SERVICEBUS_NAMESPACE",
        "EXTHUB_AZURE__BLOB_ACCOUNT_URL",
    ),
    "agent": ("EXTHUB_AZURE__SERVICEBUS_NAMESPACE",),
}


class AzureSettings(BaseModel):
    """The Azure backend (``EXTHUB_AZURE__…``): endpoints and names only.

    Access is always through an azure-identity credential (``services.platform.azure.identity``): there is
    deliberately no field for an account key, connection string or SAS, and an unknown field is refused.
    """

    # A value given for a field that does not exist (say an account key) must not be echoed in the error.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    cosmos_endpoint: str | None = Field(
        default=None, description="Cosmos DB account endpoint (`https://<account>.documents.azure.com:443/`)."
    )
    cosmos_database: str = Field(default="exthub", description="Cosmos DB database name.")
    servicebus_namespace: str | None = Field(
        default=None,
        description="Service Bus fully qualified namespace (`<ns>.servicebus.windows.net`; `127.0.0.1:PORT` for "
        "the test broker).",
    )
    servicebus_endpoint: str | None = Field(
        default=None,
        description="`host:port` the AMQP connection goes to when it is not the namespace itself (a gateway in front "
        "of it; the local test broker serving several namespaces); None: the namespace.",
    )
    blob_account_url: str | None = Field(
        default=None, description="Blob Storage account URL (`https://<account>.blob.core.windows.net`)."
    )
    blob_container: str = Field(default="exthub-objects", description="The container holding execution objects.")
    client_id: str | None = Field(
        default=None,
        description="Client id of the user-assigned identity to use; None: the standard AZURE_CLIENT_ID.",
    )
    service_token_scope: str | None = Field(
        default=None, description="Scope the services request to call each other (`api://exthub/.default`)."
    )

    @field_validator("cosmos_endpoint")
    @classmethod
    def _cosmos_endpoint(cls, value: str | None) -> str | None:
        return _azure_endpoint(value, "EXTHUB_AZURE__COSMOS_ENDPOINT")

    @field_validator("blob_account_url")
    @classmethod
    def _blob_account_url(cls, value: str | None) -> str | None:
        return _azure_endpoint(value, "EXTHUB_AZURE__BLOB_ACCOUNT_URL")

    @field_validator("servicebus_endpoint")
    @classmethod
    def _servicebus_endpoint(cls, value: str | None) -> str | None:
        if value is not None and not (_NAMESPACE.fullmatch(value) and ":" in value):
            raise ValueError("EXTHUB_AZURE__SERVICEBUS_ENDPOINT must be host:port (no scheme, path or credentials)")
        return value

    @field_validator("servicebus_namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        if value is not None and not _NAMESPACE.fullmatch(value):
            raise ValueError(
                "EXTHUB_AZURE__SERVICEBUS_NAMESPACE must be a fully qualified namespace such as "
                "<ns>.servicebus.windows.net (host[:port], no scheme, path or credentials)"
            )
        return value

    @field_validator("cosmos_database")
    @classmethod
    def _database(cls, value: str) -> str:
        if not _DATABASE.fullmatch(value):
            raise ValueError("EXTHUB_AZURE__COSMOS_DATABASE must be 1-255 letters, digits, '_' or '-'")
        return value

    @field_validator("blob_container")
    @classmethod
    def _container(cls, value: str) -> str:
        if not _BLOB_CONTAINER.fullmatch(value):
            raise ValueError(
                "EXTHUB_AZURE__BLOB_CONTAINER must be 3-63 lower-case letters, digits and single hyphens, "
                "starting and ending with a letter or digit"
            )
        return value

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("EXTHUB_AZURE__CLIENT_ID must be a client id (a GUID)") from None

    @field_validator("service_token_scope")
    @classmethod
    def _scope(cls, value: str | None) -> str | None:
        if value is not None and not _SCOPE.fullmatch(value):
            raise ValueError("EXTHUB_AZURE__SERVICE_TOKEN_SCOPE must be an app id URI scope ending in /.default")
        return value

    def missing_for(self, service: str | None = None) -> list[str]:
        """The variables the azure backend of ``service`` (``catalog``, ``execution``, ``agent``; None: every
        service, as ``exthub up`` runs them all) needs that are not set (empty when it is complete)."""
        endpoints = {
            "EXTHUB_AZURE__COSMOS_ENDPOINT": self.cosmos_endpoint,
            "EXTHUB_AZURE__SERVICEBUS_NAMESPACE": self.servicebus_namespace,
            "EXTHUB_AZURE__BLOB_ACCOUNT_URL": self.blob_account_url,
        }
        needed = AZURE_ENDPOINTS_BY_SERVICE.get(service or "", tuple(endpoints))
        required = {name: endpoints[name] for name in needed}
        required["EXTHUB_AZURE__SERVICE_TOKEN_SCOPE"] = self.service_token_scope
        return [name for name, value in required.items() if not value]


class EgressSettings(BaseModel):
    """Calls to publisher-supplied URLs (``services.platform.egress``): the allow-list of internal destinations."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allow: StrList = Field(
        default_factory=list,
        description="Destinations called although not public: CIDRs (`10.1.2.0/24`) or `host:port` "
        "(`127.0.0.1:8123`, `extensions.internal:443`); a JSON array or a comma-separated list.",
    )
    resolve_timeout_seconds: float = Field(default=2.0, gt=0, le=30, description="DNS resolution timeout.")

    def policy(self) -> EgressPolicy:
        """The :class:`EgressPolicy` these settings describe."""
        return EgressPolicy(self.allow, resolve_timeout=self.resolve_timeout_seconds)

    _split = field_validator("allow", mode="before")(_split_list)

    @field_validator("allow")
    @classmethod
    def _entries(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_allow_entry(entry)
        return value


class TelemetrySettings(BaseModel):
    """Where traces go besides OTLP (which the standard ``OTEL_*`` variables configure on their own)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    azure_monitor: bool = Field(
        default=False,
        description="Export traces to Azure Monitor (Application Insights); the target is the standard "
        "`APPLICATIONINSIGHTS_CONNECTION_STRING` variable (a secret: never a setting).",
    )


class EventsSettings(BaseModel):
    """Event publishing (``EXTHUB_EVENTS__…``): where execution events go as CloudEvents."""

    # A refused webhook URL may hold a secret: validation errors do not repeat the input.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    publisher: Literal["webhook", "servicebus"] | None = Field(
        default=None, description="The event publisher; None: servicebus on the azure backend, webhook otherwise."
    )
    webhooks: StrList = Field(
        default_factory=list,
        description="Webhook sink URLs (JSON array or comma-separated; http(s), no credentials): every event is "
        "POSTed to each (CloudEvents HTTP binding, structured mode).",
    )
    topic: str = Field(
        default="execution-events",
        # a length limit instead of a bounded repetition: pydantic's regex engine expands {0,259} into a large
        # automaton that every process would hold
        max_length=260,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Service Bus topic.",
    )
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60, description="Timeout of one webhook request.")
    webhook_max_attempts: int = Field(default=5, ge=1, le=20, description="Attempts per event and sink.")
    source: str | None = Field(default=None, description="CloudEvents `source`; None: the gateway's public URL.")

    _split = field_validator("webhooks", mode="before")(_split_list)

    @field_validator("webhooks")
    @classmethod
    def _webhook_urls(cls, value: list[str]) -> list[str]:
        # imported here: the events package (and cloudevents) stays out of the services that publish no events
        from services.platform.events.port import check_webhook_url

        for url in value:
            check_webhook_url(url)
        if len(set(value)) != len(value):
            raise ValueError("a webhook URL is configured twice")
        return value


Port = Annotated[int, Field(ge=0, le=65_535)]


class Settings(BaseSettings):
    """Every setting of the hub; ``0`` for a port lets the OS choose."""

    model_config = SettingsConfigDict(
        env_prefix="EXTHUB_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
        validate_default=True,
        hide_input_in_errors=True,  # validation errors are printed at startup: never echo a (secret) value
    )

    backend: Literal["local", "azure"] = "local"
    data_dir: Path = Path(".exthub-data")
    host: str = "127.0.0.1"
    catalog_port: Port = 50051
    execution_port: Port = 50052
    agent_port: Port = 50053
    public_url: str | None = Field(
        default=None, description="The gateway's public base URL; every URL handed out is built from it."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    page_token_secret: SecretStr | None = Field(
        default=None, description="HMAC key for page tokens; None → a random key file in data_dir."
    )
    azure: AzureSettings = Field(default_factory=AzureSettings)
    egress: EgressSettings = Field(default_factory=EgressSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    # -- execution service -----------------------------------------------------------------------------
    objects_port: Port = Field(
        default=50054, description="The execution service's local/v1 object HTTP server (0: the OS chooses)."
    )
    catalog_address: str | None = Field(
        default=None, description="gRPC `host:port` of the catalog for the execution service; None: host:catalog_port."
    )
    agent_address: str | None = Field(
        default=None, description="gRPC `host:port` of the agent for synchronous executions; None: host:agent_port."
    )
    # -- end execution service ------------------------------------------------------------------------

    # -- agent ------------------------------------------------------------------------------------
    agent_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="The agent's id; None: generated once and kept in data_dir/agent/agent-id.",
    )
    agent_priorities: Annotated[list[Literal["HIGH", "NORMAL", "LOW"]], NoDecode] = Field(
        default=["HIGH", "NORMAL", "LOW"],
        description="Priorities of queued work the agent consumes (JSON array or comma-separated).",
    )
    agent_max_in_flight: int = Field(
        default=64, ge=1, le=10_000, description="Attempts one agent runs at once; more are refused (AGENT_BUSY)."
    )
    execution_address: str | None = Field(
        default=None,
        description="gRPC `host:port` of the execution service for the agent (signing); None: host:execution_port.",
    )

    @field_validator("agent_priorities", mode="before")
    @classmethod
    def _agent_priority_list(cls, value: Any) -> Any:
        value = _split_list(value)
        return [v.upper() if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @field_validator("agent_priorities")
    @classmethod
    def _agent_priorities_distinct(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("the agent must consume at least one priority")
        if len(set(value)) != len(value):
            raise ValueError("agent_priorities must not repeat a priority")
        return value

    # -- end agent ------------------------------------------------------------------------------------

    # -- asynchronous execution: work queue, agent worker, dispatcher and sweeper -----------------
    queue_file: Path = Field(
        default=Path("queue.sqlite3"),
        description="The local work queue's SQLite file (relative: inside data_dir), shared by the execution "
        "service (publisher) and every agent process (consumers).",
    )
    queue_ageing_seconds: float = Field(
        default=60.0, gt=0, description="Waiting this long raises a queued message by one priority level."
    )
    queue_poll_seconds: float = Field(
        default=0.1,
        gt=0,
        le=10,
        description="How often a waiting receiver looks for work published by another process.",
    )
    agent_worker: bool = Field(
        default=True, description="Run the queue worker in the agent process (local backend): async executions."
    )
    agent_worker_slots: int = Field(default=16, ge=1, le=1_000, description="Attempts the worker runs at once.")
    agent_receive_wait_seconds: float = Field(
        default=5.0, gt=0, le=60, description="Long-poll wait of one receive when the queue is empty."
    )
    agent_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        le=300,
        description="Queue lease per message; a crashed agent's attempt is redelivered after it.",
    )
    agent_heartbeat_seconds: float = Field(
        default=10.0, gt=0, description="Heartbeat period: renews the lease and learns cancellation (< lease)."
    )
    execution_sweep_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="Period of the execution service's timeout sweeper and outbox sweep."
    )
    execution_cancel_grace_seconds: float = Field(
        default=60.0,
        ge=0,
        description="A RUNNING execution whose cancel no agent acknowledged in time is CANCELLED by the sweeper.",
    )
    execution_input_timeout_seconds: float = Field(
        default=86_400.0, gt=0, description="How long an execution may wait in PENDING_INPUTS before TIMED_OUT."
    )
    # -- performance: what the execution service keeps of the catalog's answers -------------------------
    execution_version_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="How long the execution service reuses an exact extension version read from the catalog "
        "(0: ask every time); a deprecated or deleted version may still be used for this long.",
    )
    execution_latest_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="How long the execution service reuses what `…/versions/latest` resolved to (0: ask every time).",
    )

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Settings:
        if self.agent_heartbeat_seconds >= self.agent_lease_seconds:
            raise ValueError("agent_heartbeat_seconds must be shorter than agent_lease_seconds")
        return self

    @property
    def queue_path(self) -> Path:
        """The work queue file (``queue_file``, inside ``data_dir`` unless absolute)."""
        return self.queue_file if self.queue_file.is_absolute() else self.data_dir / self.queue_file

    # -- end asynchronous execution -------------------------------------------------------------------

    # -- observability: each service's HTTP port serves /metrics -----------------------------------------
    catalog_http_port: Port = Field(
        default=50055,
        description="The catalog's HTTP server (`/metrics`; 0: the OS chooses). Unset while `catalog_port` is 0: 0.",
    )
    agent_http_port: Port = Field(
        default=50056,
        description="The agent's HTTP server (`/metrics`; 0: the OS chooses). Unset while `agent_port` is 0: 0.",
    )

    @model_validator(mode="before")
    @classmethod
    def _http_ports_follow_grpc_ports(cls, data: Any) -> Any:
        """A service whose gRPC port the OS chooses gets an OS-chosen HTTP port too, unless one is given (two
        processes started with port 0 must not collide on a fixed metrics port)."""
        if isinstance(data, dict):
            for grpc_port, http_port in (("catalog_port", "catalog_http_port"), ("agent_port", "agent_http_port")):
                if http_port not in data and str(data.get(grpc_port, "")).strip() == "0":
                    data = {**data, http_port: 0}
        return data

    # -- end observability ----------------------------------------------------------------------------

    # -- catalog search: every catalog replica's own index, refreshed from the document store ----------
    catalog_search_poll_seconds: float = Field(
        default=0.5, gt=0, le=60, description="How often a catalog replica polls the store for changed extensions."
    )
    catalog_search_overlap_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="Each poll re-reads changes this far back: must exceed clock skew between replicas plus the "
        "slowest commit (later ones are caught by the next full resync).",
    )
    catalog_search_resync_seconds: float = Field(
        default=300.0, gt=0, description="Period of the full re-read that backs up the polling window."
    )
    catalog_search_cache_entries: int = Field(
        default=256, ge=0, le=100_000, description="Search results cached per query and filter (0: none)."
    )
    # -- end catalog search ---------------------------------------------------------------------------

    # -- event publishing ------------------------------------------------------------------
    events: EventsSettings = Field(default_factory=EventsSettings)

    @property
    def events_publisher(self) -> Literal["webhook", "servicebus"]:
        """The event publisher in use: ``events.publisher``, else servicebus on azure and webhook locally."""
        return self.events.publisher or ("servicebus" if self.backend == "azure" else "webhook")

    @model_validator(mode="after")
    def _events_backend(self) -> Settings:
        # An explicit choice is checked here; the azure default is checked with the rest of the azure backend
        # by the services that publish (the catalog, for one, has no namespace and publishes nothing).
        if self.events.publisher == "servicebus" and not self.azure.servicebus_namespace:
            raise ValueError("the servicebus event publisher needs EXTHUB_AZURE__SERVICEBUS_NAMESPACE")
        return self

    # -- end event publishing -------------------------------------------------------------------------

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("public_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("public_url must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("page_token_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("page_token_secret must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def _azure_backend_complete(self) -> Settings:
        if self.backend == "azure" and not self.azure.service_token_scope:
            raise ValueError("EXTHUB_BACKEND=azure needs EXTHUB_AZURE__SERVICE_TOKEN_SCOPE (not set)")
        return self

    def require_backend(self, service: str | None = None) -> None:
        """Refuse, naming each variable, an azure backend that misses an endpoint ``service`` needs (None: every
        service). Called when a service (or ``exthub up``) starts; a no-op on the local backend."""
        if self.backend == "azure":
            missing = self.azure.missing_for(service)
            if missing:
                raise ValueError(f"EXTHUB_BACKEND=azure needs {', '.join(missing)} (not set)")

    @model_validator(mode="after")
    def _auth_defaults(self) -> Settings:
        if not self.auth.configured:
            if self.backend == "local" and not (
                self.auth.issuers or self.auth.audiences or self.auth.jwks_file or self.auth.jwks_uri
            ):
                object.__setattr__(self, "auth", AuthSettings.development(self.data_dir))
            else:
                raise ValueError("auth needs issuers, audiences and jwks_file or jwks_uri")
        return self

    @classmethod
    def local_defaults(cls, data_dir: Path, **overrides: Any) -> Settings:
        """Local-backend settings rooted at ``data_dir`` with the development issuer (env still applies)."""
        return cls(backend="local", data_dir=data_dir, **overrides)

    @property
    def page_token_secret_path(self) -> Path:
        """Where the generated page-token key is kept when none is configured."""
        return self.data_dir / PAGE_TOKEN_KEY_FILE

    def page_token_key(self) -> bytes:
        """The page-token HMAC key: the configured secret, else a 32-byte random file (0600, made once).

        Blocking file I/O on first use: call it at startup (or through ``asyncio.to_thread``).
        """
        if self.page_token_secret is not None:
            return self.page_token_secret.get_secret_value().encode("utf-8")
        key = read_or_create_once(self.page_token_secret_path, secrets.token_bytes(32), mode=0o600)
        if len(key) < 32:
            raise ValueError(f"{self.page_token_secret_path} holds fewer than 32 bytes")
        return key

    def grpc_address(self, port: int) -> str:
        """``host:port`` for binding or dialling (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{port}"
