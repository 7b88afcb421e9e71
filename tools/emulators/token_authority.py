"""A local token authority that plays Microsoft Entra ID for the emulator profile (development and tests only;
never shipped, never a production path).

It answers what the unmodified ``azure-identity`` (and MSAL) ask of Entra ID, over HTTPS with the development
CA (:mod:`tools.emulators.certs`):

- ``POST /{tenant}/oauth2/v2.0/token`` — the client-credentials grant, authenticated by a ``client_assertion``
  (jwt-bearer: the projected service-account token workload identity reads from ``AZURE_FEDERATED_TOKEN_FILE``)
  or a client secret. The assertion must be signed by this authority's cluster key (it plays the AKS OIDC
  issuer too, at ``/cluster/``), with audience ``api://AzureADTokenExchange`` and a subject configured as a
  federated credential of that client; a secret must match the SHA-256 configured for the client.
- ``GET /{tenant}/v2.0/.well-known/openid-configuration``, ``/{tenant}/discovery/v2.0/keys`` (also
  ``/{tenant}/discovery/keys``) and ``/common/discovery/instance`` — the metadata MSAL and token verifiers read.

Tokens are RS256 JWTs signed with the authority's own key, shaped like Entra ID's: for the Azure resources that
take v1.0 tokens (Storage, Service Bus, Cosmos DB) ``iss`` is ``https://sts.windows.net/{tid}/`` as Entra ID
issues them (and as Azurite insists); for configured APIs (``api://exthub``) they are v2.0 tokens with
``iss`` = ``https://127.0.0.1:PORT/{tid}/v2.0``, the ``aud`` of the resource, ``tid``, ``oid``, ``azp``,
``idtyp: app`` and the client's app ``roles``. :func:`mint_user_token` signs user tokens (``exthub token`` on the
Azure profile, tests) with the same key.

Run it as a process (``python -m tools.emulators.token_authority --port 0 --dir D --config C``: it prints
``token-authority serving on https://127.0.0.1:PORT`` and stops on SIGTERM) or through
:class:`TokenAuthorityProcess`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import signal
import socket
import ssl
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from exthub.contract.keyfiles import read_or_create_once, replace_atomically
from tools.emulators import certs as dev_certs
from tools.emulators._process import ChildProcess, EmulatorStartError, spawn

__all__ = [
    "TOKEN_EXCHANGE_AUDIENCE",
    "AuthorityConfig",
    "AuthorityKeys",
    "ClientConfig",
    "ResourceConfig",
    "TokenAuthorityProcess",
    "authority_state",
    "mint_federated_token",
    "mint_user_token",
]

_log = logging.getLogger("exthub.token_authority")

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"  # noqa: S105 - an audience, not a secret
V1_ISSUER = "https://sts.windows.net/{tenant}/"
AZURE_V1_RESOURCES = ("https://storage.azure.com", "https://servicebus.azure.net", "https://cosmos.azure.com")
# The Azure CLI's public client id: what a developer's user token names as its client (``azp``).
CLI_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
STATE_FILE = "authority.json"
TOKEN_KEY_FILE = "keys/token-signing.pem"  # noqa: S105 - a file name
CLUSTER_KEY_FILE = "keys/cluster-signing.pem"
FEDERATED_TOKEN_SECONDS = 3600
FEDERATED_REFRESH_SECONDS = 1200
CLOCK_SKEW_SECONDS = 300
READY_LINE = re.compile(r"token-authority serving on (https://127\.0\.0\.1:[0-9]+)")


# ---- configuration -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientConfig:
    """An application (service principal) the authority knows.

    ``federated_subjects``: service-account subjects (``system:serviceaccount:<ns>:<sa>``) whose tokens it
    accepts as client assertions; ``secret_sha256``: hex SHA-256 of a client secret (the secret itself is
    never stored); ``roles``: app roles put in tokens for configured APIs.
    """

    client_id: str
    object_id: str
    roles: tuple[str, ...] = ()
    federated_subjects: tuple[str, ...] = ()
    secret_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "object_id": self.object_id,
            "roles": list(self.roles),
            "federated_subjects": list(self.federated_subjects),
            "secret_sha256": self.secret_sha256,
        }


@dataclass(frozen=True)
class ResourceConfig:
    """A resource tokens can be asked for (``<resource>/.default``): token version, audience, app roles."""

    resource: str
    version: Literal[1, 2] = 2
    audience: str | None = None
    app_roles: bool = True

    @property
    def aud(self) -> str:
        return self.audience or self.resource

    def to_json(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "version": self.version,
            "audience": self.audience,
            "app_roles": self.app_roles,
        }


@dataclass(frozen=True)
class AuthorityConfig:
    """The tenant, its applications and the resources it issues tokens for.

    The Azure data-plane resources (:data:`AZURE_V1_RESOURCES`, v1.0 tokens, no app roles) are always known.
    """

    tenant_id: str
    clients: tuple[ClientConfig, ...] = ()
    resources: tuple[ResourceConfig, ...] = ()
    token_lifetime_seconds: int = 3600

    def client(self, client_id: str) -> ClientConfig | None:
        return next((c for c in self.clients if c.client_id == client_id), None)

    def resource(self, resource: str) -> ResourceConfig | None:
        for known in self.resources:
            if known.resource == resource:
                return known
        if resource in AZURE_V1_RESOURCES:
            return ResourceConfig(resource, version=1, app_roles=False)
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "token_lifetime_seconds": self.token_lifetime_seconds,
            "clients": [c.to_json() for c in self.clients],
            "resources": [r.to_json() for r in self.resources],
        }

    def write(self, path: Path) -> Path:
        replace_atomically(path, json.dumps(self.to_json(), indent=2).encode(), mode=0o600)
        return path

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> AuthorityConfig:
        clients = tuple(
            ClientConfig(
                client_id=str(uuid.UUID(str(c["client_id"]))),
                object_id=str(uuid.UUID(str(c["object_id"]))),
                roles=tuple(c.get("roles") or ()),
                federated_subjects=tuple(c.get("federated_subjects") or ()),
                secret_sha256=c.get("secret_sha256"),
            )
            for c in document.get("clients") or ()
        )
        resources = tuple(
            ResourceConfig(
                resource=str(r["resource"]),
                version=2 if int(r.get("version", 2)) == 2 else 1,
                audience=r.get("audience"),
                app_roles=bool(r.get("app_roles", True)),
            )
            for r in document.get("resources") or ()
        )
        return cls(
            tenant_id=str(uuid.UUID(str(document["tenant_id"]))),
            clients=clients,
            resources=resources,
            token_lifetime_seconds=int(document.get("token_lifetime_seconds", 3600)),
        )

    @classmethod
    def load(cls, path: Path) -> AuthorityConfig:
        return cls.from_json(json.loads(path.read_text()))


def secret_hash(secret: str) -> str:
    """What :attr:`ClientConfig.secret_sha256` holds for ``secret``."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# ---- keys and state ------------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _rsa_key(path: Path) -> rsa.RSAPrivateKey:
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = serialization.load_pem_private_key(read_or_create_once(path, pem), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError(f"{path} does not hold an RSA key")
    return key


def _rsa_jwk(key: rsa.RSAPrivateKey) -> dict[str, str]:
    """The public JWK with ``kid`` = ``x5t`` = base64url(SHA-1 of the public key DER), as Entra ID names keys."""
    public = key.public_key()
    numbers = public.public_numbers()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA1())  # noqa: S303 - a key name, not a security function
    digest.update(der)
    kid = _b64url(digest.finalize())
    return {
        "kty": "RSA",
        "use": "sig",
        "kid": kid,
        "x5t": kid,
        "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": _b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
    }


@dataclass
class AuthorityKeys:
    """The token-signing key and the cluster (service-account) key, PEM files under ``directory/keys``."""

    token_key: rsa.RSAPrivateKey
    token_jwk: dict[str, str]
    cluster_key: rsa.RSAPrivateKey
    cluster_jwk: dict[str, str]

    @classmethod
    def load_or_create(cls, directory: Path) -> AuthorityKeys:
        token_key = _rsa_key(directory / TOKEN_KEY_FILE)
        cluster_key = _rsa_key(directory / CLUSTER_KEY_FILE)
        return cls(token_key, _rsa_jwk(token_key), cluster_key, _rsa_jwk(cluster_key))

    def sign_token(self, claims: Mapping[str, Any]) -> str:
        kid = self.token_jwk["kid"]
        return jwt.encode(
            dict(claims), self.token_key, algorithm="RS256", headers={"typ": "JWT", "kid": kid, "x5t": kid}
        )

    def sign_cluster_token(self, claims: Mapping[str, Any]) -> str:
        return jwt.encode(dict(claims), self.cluster_key, algorithm="RS256", headers={"kid": self.cluster_jwk["kid"]})


@dataclass(frozen=True)
class AuthorityState:
    """Where a running authority listens (``<dir>/authority.json``, written once it serves)."""

    url: str
    tenant_id: str

    @property
    def issuer(self) -> str:
        """The v2.0 issuer of its tokens (what a verifier is configured with)."""
        return f"{self.url}/{self.tenant_id}/v2.0"

    @property
    def jwks_uri(self) -> str:
        return f"{self.url}/{self.tenant_id}/discovery/v2.0/keys"

    @property
    def cluster_issuer(self) -> str:
        """The issuer of the service-account tokens it accepts as client assertions (plays the AKS OIDC issuer)."""
        return f"{self.url}/cluster/"


def authority_state(directory: Path) -> AuthorityState:
    """The state a running authority wrote into ``directory``."""
    document = json.loads((directory / STATE_FILE).read_text())
    return AuthorityState(url=document["url"], tenant_id=document["tenant_id"])


# ---- minting -------------------------------------------------------------------------------------------------


def mint_federated_token(
    directory: Path, *, subject: str, ttl_seconds: int = FEDERATED_TOKEN_SECONDS, now: float | None = None
) -> str:
    """A projected service-account token (what AKS writes to ``AZURE_FEDERATED_TOKEN_FILE``) for ``subject``,
    signed with the cluster key of the authority whose files are in ``directory`` (it must be running)."""
    state = authority_state(directory)
    keys = AuthorityKeys.load_or_create(directory)
    issued = int(time.time() if now is None else now)
    return keys.sign_cluster_token(
        {
            "aud": [TOKEN_EXCHANGE_AUDIENCE],
            "iss": state.cluster_issuer,
            "sub": subject,
            "iat": issued,
            "nbf": issued,
            "exp": issued + ttl_seconds,
            "jti": str(uuid.uuid4()),
        }
    )


def mint_user_token(
    directory: Path,
    *,
    audience: str,
    roles: Iterable[str] = (),
    tenant_id: str | None = None,
    issuer_tenant_id: str | None = None,
    user_id: str | None = None,
    name: str = "Exthub Developer",
    scopes: Iterable[str] = ("user_impersonation",),
    ttl_seconds: int = 3600,
    now: float | None = None,
) -> str:
    """A v2.0 user access token for ``audience`` from the authority whose files are in ``directory``.

    ``tenant_id`` defaults to the authority's tenant; ``iss`` names ``issuer_tenant_id``, by default the token's
    tenant as Entra ID does. The emulator profile passes the authority's own tenant as ``issuer_tenant_id``, so a
    hub that trusts that one issuer still sees other tenants in ``tid`` (Entra ID never issues such a token).
    """
    state = authority_state(directory)
    keys = AuthorityKeys.load_or_create(directory)
    tenant = tenant_id or state.tenant_id
    oid = user_id or str(uuid.uuid4())
    issued = int(time.time() if now is None else now)
    sub = _b64url(hashlib.sha256(f"{oid}|{audience}".encode()).digest())
    claims: dict[str, Any] = {
        "aud": audience,
        "iss": f"{state.url}/{issuer_tenant_id or tenant}/v2.0",
        "iat": issued - CLOCK_SKEW_SECONDS,
        "nbf": issued - CLOCK_SKEW_SECONDS,
        "exp": issued + ttl_seconds,
        "aio": _b64url(secrets.token_bytes(24)),
        "azp": CLI_CLIENT_ID,
        "azpacr": "0",
        "name": name,
        "oid": oid,
        "preferred_username": f"{oid[:8]}@exthub.dev",
        "rh": _b64url(secrets.token_bytes(16)),
        "scp": " ".join(scopes),
        "sub": sub,
        "tid": tenant,
        "uti": _b64url(secrets.token_bytes(16)),
        "ver": "2.0",
    }
    role_list = list(roles)
    if role_list:
        claims["roles"] = role_list
    return keys.sign_token(claims)


# ---- the HTTP authority --------------------------------------------------------------------------------------


class OAuthError(Exception):
    """An Entra-ID-shaped error answer (``AADSTS<code>: …``)."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.code = code
        self.description = description


@dataclass
class TokenAuthority:
    """The request handlers; ``url`` is set once the listening port is known."""

    config: AuthorityConfig
    keys: AuthorityKeys
    url: str = ""
    issued: int = field(default=0)

    @property
    def state(self) -> AuthorityState:
        return AuthorityState(self.url, self.config.tenant_id)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors], client_max_size=256 * 1024)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._openid_configuration)
        app.router.add_get("/{tenant}/discovery/v2.0/keys", self._keys)
        app.router.add_get("/{tenant}/discovery/keys", self._keys)
        app.router.add_get("/common/discovery/instance", self._instance_discovery)
        app.router.add_get("/cluster/.well-known/openid-configuration", self._cluster_configuration)
        app.router.add_get("/cluster/openid/v1/jwks", self._cluster_keys)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except OAuthError as error:
            now = datetime.now(UTC)
            trace = str(uuid.uuid4())
            correlation = request.headers.get("client-request-id") or str(uuid.uuid4())
            description = (
                f"AADSTS{error.code}: {error.description} Trace ID: {trace} Correlation ID: {correlation} "
                f"Timestamp: {now.strftime('%Y-%m-%d %H:%M:%SZ')}"
            )
            _log.info("token request refused: AADSTS%s %s", error.code, error.error)
            return web.json_response(
                {
                    "error": error.error,
                    "error_description": description,
                    "error_codes": [error.code],
                    "timestamp": now.strftime("%Y-%m-%d %H:%M:%SZ"),
                    "trace_id": trace,
                    "correlation_id": correlation,
                },
                status=error.status,
                headers={"Cache-Control": "no-store"},
            )

    def _tenant(self, request: web.Request) -> str:
        tenant = request.match_info["tenant"]
        if tenant != self.config.tenant_id:
            raise OAuthError(400, "invalid_request", 90002, f"Tenant '{tenant[:64]}' not found.")
        return tenant

    # -- metadata ----------------------------------------------------------------------------------------------

    async def _openid_configuration(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        base = f"{self.url}/{tenant}"
        return web.json_response(
            {
                "issuer": f"{base}/v2.0",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "tenant_region_scope": None,
                "cloud_instance_name": "exthub.dev",
                "cloud_graph_host_name": "graph.exthub.dev",
                "msgraph_host": "graph.exthub.dev",
            }
        )

    async def _keys(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        key = {**self.keys.token_jwk, "issuer": f"{self.url}/{tenant}/v2.0"}
        return web.json_response({"keys": [key]}, headers={"Cache-Control": "max-age=86400"})

    async def _instance_discovery(self, request: web.Request) -> web.Response:
        host = self.url.removeprefix("https://")
        return web.json_response(
            {
                "tenant_discovery_endpoint": f"{self.url}/{{tenantid}}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
            }
        )

    async def _cluster_configuration(self, request: web.Request) -> web.Response:
        issuer = self.state.cluster_issuer
        return web.json_response(
            {
                "issuer": issuer,
                "jwks_uri": f"{issuer}openid/v1/jwks",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def _cluster_keys(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [{**self.keys.cluster_jwk, "alg": "RS256"}]})

    # -- the token endpoint ------------------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        if request.content_type != "application/x-www-form-urlencoded":
            raise OAuthError(400, "invalid_request", 900144, "The request body must be form-urlencoded.")
        form = await request.post()
        params = {k: str(v) for k, v in form.items()}
        grant = params.get("grant_type")
        if grant != "client_credentials":
            raise OAuthError(400, "unsupported_grant_type", 70003, f"The grant type '{grant}' is not supported.")
        client_id = params.get("client_id", "")
        client = self.config.client(client_id)
        if client is None:
            raise OAuthError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id[:64]}' was not found in the directory '{tenant}'.",
            )
        method = self._authenticate(client, params)
        resource = self._resource(params.get("scope", ""))
        now = int(time.time())
        lifetime = self.config.token_lifetime_seconds
        token = self.keys.sign_token(self._app_claims(client, resource, method, now, lifetime, params.get("claims")))
        self.issued += 1
        _log.info("token issued: client %s resource %s (%s)", client.client_id, resource.resource, method)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token},
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    def _authenticate(self, client: ClientConfig, params: Mapping[str, str]) -> Literal["assertion", "secret"]:
        assertion = params.get("client_assertion")
        secret = params.get("client_secret")
        if assertion is not None and secret is not None:
            raise OAuthError(400, "invalid_request", 90023, "Only one client authentication method is allowed.")
        if assertion is not None:
            if params.get("client_assertion_type") != JWT_BEARER:
                raise OAuthError(400, "invalid_request", 90023, "The client_assertion_type is not supported.")
            self._check_assertion(client, assertion)
            return "assertion"
        if secret is not None:
            expected = client.secret_sha256 or ""
            if not expected or not hmac.compare_digest(secret_hash(secret), expected):
                raise OAuthError(
                    401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret is correct."
                )
            return "secret"
        raise OAuthError(
            401, "invalid_client", 7000218, "The request body must contain 'client_assertion' or 'client_secret'."
        )

    def _check_assertion(self, client: ClientConfig, assertion: str) -> None:
        state = self.state
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise OAuthError(400, "invalid_client", 50027, "JWT token is invalid or malformed.") from None
        if unverified.get("iss") != state.cluster_issuer:
            raise OAuthError(
                400,
                "invalid_client",
                700211,
                f"No matching federated identity record found for presented assertion issuer "
                f"'{str(unverified.get('iss'))[:128]}'.",
            )
        if header.get("kid") != self.keys.cluster_jwk["kid"] or header.get("alg") != "RS256":
            raise OAuthError(400, "invalid_client", 5002738, "The presented assertion's signing key is not trusted.")
        try:
            claims = jwt.decode(
                assertion,
                key=self.keys.cluster_key.public_key(),
                algorithms=["RS256"],
                audience=TOKEN_EXCHANGE_AUDIENCE,
                issuer=state.cluster_issuer,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise OAuthError(
                400, "invalid_client", 700024, "Client assertion is not within its valid time range."
            ) from None
        except jwt.InvalidAudienceError:
            raise OAuthError(
                400,
                "invalid_client",
                700212,
                "No matching federated identity record found for presented assertion audience.",
            ) from None
        except jwt.PyJWTError:
            raise OAuthError(400, "invalid_client", 50012, "Client assertion failed signature validation.") from None
        if claims["sub"] not in client.federated_subjects:
            raise OAuthError(
                400,
                "invalid_client",
                70021,
                "No matching federated identity record found for presented assertion subject "
                f"'{str(claims['sub'])[:128]}'.",
            )

    def _resource(self, scope: str) -> ResourceConfig:
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise OAuthError(
                400,
                "invalid_scope",
                1002012,
                "The provided value for scope is not valid. Client credential flows must have a scope value with "
                "/.default suffixed to the resource identifier (application ID URI).",
            )
        name = scopes[0].removesuffix("/.default")
        resource = self.config.resource(name) or self.config.resource(name.rstrip("/"))
        if resource is None:
            raise OAuthError(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {name[:128]} was not found in the tenant named {self.config.tenant_id}.",
            )
        return resource

    def _app_claims(
        self,
        client: ClientConfig,
        resource: ResourceConfig,
        method: Literal["assertion", "secret"],
        now: int,
        lifetime: int,
        claims_request: str | None,
    ) -> dict[str, Any]:
        tenant = self.config.tenant_id
        acr = "2" if method == "assertion" else "1"
        claims: dict[str, Any] = {
            "aud": resource.aud,
            "iat": now - CLOCK_SKEW_SECONDS,
            "nbf": now - CLOCK_SKEW_SECONDS,
            "exp": now + lifetime,
            "aio": _b64url(secrets.token_bytes(24)),
            "idtyp": "app",
            "oid": client.object_id,
            "rh": _b64url(secrets.token_bytes(16)),
            "sub": client.object_id,
            "tid": tenant,
            "uti": _b64url(secrets.token_bytes(16)),
        }
        if resource.version == 1:
            issuer = V1_ISSUER.format(tenant=tenant)
            claims.update(iss=issuer, idp=issuer, appid=client.client_id, appidacr=acr, ver="1.0")
        else:
            claims.update(iss=self.state.issuer, azp=client.client_id, azpacr=acr, ver="2.0")
        if resource.app_roles and client.roles:
            claims["roles"] = list(client.roles)
        if claims_request and '"CP1"' in claims_request:
            claims["xms_cc"] = ["CP1"]  # the client announced CAE support
        return claims


# ---- the process ---------------------------------------------------------------------------------------------


def _server_ssl(certificates: dev_certs.DevCertificates) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificates.server_cert, certificates.server_key)
    return context


def _write_federated_token(directory: Path, client: ClientConfig, path: Path) -> None:
    if not client.federated_subjects:
        raise ValueError(f"client {client.client_id} has no federated subject")
    token = mint_federated_token(directory, subject=client.federated_subjects[0])
    replace_atomically(path, token.encode(), mode=0o600)


async def serve(
    *,
    directory: Path,
    config: AuthorityConfig,
    port: int,
    certs_dir: Path,
    federated_tokens: Mapping[str, Path],
) -> None:
    """Serve until SIGTERM/SIGINT; write ``authority.json`` and the federated token files once listening."""
    keys = await asyncio.to_thread(AuthorityKeys.load_or_create, directory)
    certificates = await asyncio.to_thread(dev_certs.load_or_create, certs_dir)
    for client_id in federated_tokens:
        if config.client(client_id) is None:
            raise ValueError(f"--federated-token names an unknown client {client_id}")
    authority = TokenAuthority(config, keys)
    runner = web.AppRunner(authority.app(), access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    await web.SockSite(runner, sock, ssl_context=_server_ssl(certificates)).start()
    authority.url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    state = {"url": authority.url, "tenant_id": config.tenant_id, "issuer": authority.state.issuer}
    await asyncio.to_thread(replace_atomically, directory / STATE_FILE, json.dumps(state).encode(), mode=0o644)

    async def refresh_federated_tokens() -> None:
        while True:
            for client_id, path in federated_tokens.items():
                client = config.client(client_id)
                assert client is not None
                await asyncio.to_thread(_write_federated_token, directory, client, path)
            await asyncio.sleep(FEDERATED_REFRESH_SECONDS)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    refresher = loop.create_task(refresh_federated_tokens())
    try:
        for client_id, path in federated_tokens.items():  # written before the ready line
            client = config.client(client_id)
            assert client is not None
            await asyncio.to_thread(_write_federated_token, directory, client, path)
        print(f"token-authority serving on {authority.url}", flush=True)
        await stop.wait()
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        await runner.cleanup()


def _federated_option(value: str) -> tuple[str, Path]:
    client_id, sep, path = value.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError("expected CLIENT_ID=PATH")
    return str(uuid.UUID(client_id)), Path(path)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tools.emulators.token_authority --port 0 --dir D --config C [--federated-token ID=PATH]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.emulators.token_authority", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: the OS chooses)")
    parser.add_argument("--dir", type=Path, required=True, help="state directory (keys, authority.json)")
    parser.add_argument("--config", type=Path, required=True, help="AuthorityConfig JSON")
    parser.add_argument("--certs", type=Path, help="development CA directory (default: <dir>/certs)")
    parser.add_argument(
        "--federated-token",
        type=_federated_option,
        action="append",
        default=[],
        metavar="CLIENT_ID=PATH",
        help="keep a federated (service-account) token for this client in PATH, refreshed periodically",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    try:
        config = AuthorityConfig.load(args.config)
        asyncio.run(
            serve(
                directory=args.dir,
                config=config,
                port=args.port,
                certs_dir=args.certs or args.dir / "certs",
                federated_tokens=dict(args.federated_token),
            )
        )
    except (OSError, ValueError, KeyError) as error:
        print(f"token-authority: {error}", file=sys.stderr)
        raise SystemExit(2) from None


@dataclass
class TokenAuthorityProcess:
    """A running token authority (a child process) and what clients need to use it."""

    child: ChildProcess
    directory: Path
    config: AuthorityConfig
    certificates: dev_certs.DevCertificates
    state: AuthorityState

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT``: the ``AZURE_AUTHORITY_HOST``."""
        return self.state.url

    @property
    def pid(self) -> int:
        return self.child.pid

    @classmethod
    def start(
        cls,
        directory: Path,
        config: AuthorityConfig,
        *,
        certs_dir: Path | None = None,
        port: int = 0,
        federated_tokens: Mapping[str, Path] | None = None,
        timeout: float = 30.0,
    ) -> TokenAuthorityProcess:
        """Start it (blocking until it serves, at most ``timeout`` s; from asyncio use ``asyncio.to_thread``)."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        certs_dir = certs_dir or directory / "certs"
        certificates = dev_certs.load_or_create(certs_dir)
        config_path = config.write(directory / "config.json")
        (directory / STATE_FILE).unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "tools.emulators.token_authority",
            "--port",
            str(port),
            "--dir",
            str(directory),
            "--config",
            str(config_path),
            "--certs",
            str(certs_dir),
        ]
        for client_id, path in (federated_tokens or {}).items():
            argv += ["--federated-token", f"{client_id}={path}"]
        log_path = directory / "token-authority.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        child = spawn("token authority", argv, log_path=log_path)
        match = child.wait_for_line(READY_LINE, timeout, offset=offset)
        state = authority_state(directory)
        if state.url != match.group(1):
            child.stop(2.0)
            raise EmulatorStartError("token authority: authority.json does not match its ready line")
        return cls(child, directory, config, certificates, state)

    def stop(self, grace_seconds: float = 10.0) -> int | None:
        """Stop it by its pid (idempotent)."""
        return self.child.stop(grace_seconds)

    def environment(self, client_id: str, federated_token_file: Path) -> dict[str, str]:
        """The standard variables a workload-identity pod gets, pointing at this authority."""
        return {
            "AZURE_AUTHORITY_HOST": self.url,
            "AZURE_TENANT_ID": self.config.tenant_id,
            "AZURE_CLIENT_ID": client_id,
            "AZURE_FEDERATED_TOKEN_FILE": str(federated_token_file),
            "SSL_CERT_FILE": str(self.certificates.trust_bundle),
        }

    def federated_token(self, client_id: str, path: Path) -> Path:
        """Write a fresh federated token for ``client_id`` to ``path`` (0600) and return the path."""
        client = self.config.client(client_id)
        if client is None:
            raise ValueError(f"unknown client {client_id}")
        _write_federated_token(self.directory, client, path)
        return path

    def user_token(self, *, audience: str, roles: Iterable[str] = (), **claims: Any) -> str:
        """A user access token from this authority (see :func:`mint_user_token`)."""
        return mint_user_token(self.directory, audience=audience, roles=roles, **claims)


if __name__ == "__main__":
    main()
