"""The local token authority: the unmodified azure-identity credentials get tokens from it with the standard
variables alone, the hub's verifier accepts them, and it refuses what Entra ID refuses."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential
from azure.identity.aio import WorkloadIdentityCredential
from cryptography.hazmat.primitives.asymmetric import rsa

from exthub.contract.roles import AGENT, EXECUTIONS_RUN, HUB_ADMIN
from tests.support.azure_emulators import (
    AGENT_CLIENT_ID,
    API,
    API_SCOPE,
    CLIENT_SECRET,
    HUB_CLIENT_ID,
    HUB_OBJECT_ID,
    HUB_SUBJECT,
    SECRET_CLIENT_ID,
    SECRET_OBJECT_ID,
    STORAGE_SCOPE,
    TENANT_ID,
    Emulators,
)
from tools.emulators._process import REPOSITORY
from tools.emulators.token_authority import (
    JWT_BEARER,
    TOKEN_EXCHANGE_AUDIENCE,
    AuthorityKeys,
    TokenAuthorityProcess,
    mint_federated_token,
)

TIMEOUT = aiohttp.ClientTimeout(total=20)


@pytest.fixture
def authority(emulators: Emulators) -> TokenAuthorityProcess:
    return emulators.authority()


@pytest.fixture
async def client(authority: TokenAuthorityProcess) -> AsyncIterator[aiohttp.ClientSession]:
    context = ssl.create_default_context(cafile=str(authority.certificates.ca_cert))
    async with aiohttp.ClientSession(timeout=TIMEOUT, connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield session


async def _token_request(
    session: aiohttp.ClientSession, authority: TokenAuthorityProcess, form: Mapping[str, str], tenant: str = TENANT_ID
) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{authority.url}/{tenant}/oauth2/v2.0/token", data=dict(form)) as response:
        return response.status, await response.json()


def _assertion_form(assertion: str, *, client_id: str = HUB_CLIENT_ID, scope: str = API_SCOPE) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        "scope": scope,
    }


def _claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


# ---- the production path, with the standard variables only ---------------------------------------------------


def test_standard_variables_only(emulators: Emulators, tmp_path: Path) -> None:
    """A child process with nothing but the workload-identity variables, SSL_CERT_FILE, PATH and HOME: the
    unmodified DefaultAzureCredential / WorkloadIdentityCredential get tokens, the hub's verifier (configured
    with the authority's issuer and JWKS URI) accepts them, and the az-blob provider round-trips through
    Azurite with a user-delegation SAS."""
    authority = emulators.authority()
    azurite = emulators.azurite()
    user_id = str(uuid.uuid4())
    user_token = authority.user_token(audience=API, roles=[EXECUTIONS_RUN], user_id=user_id)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        **authority.environment(HUB_CLIENT_ID, emulators.hub_token_file),
    }
    assert set(env) == {
        "PATH",
        "HOME",
        "AZURE_AUTHORITY_HOST",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "SSL_CERT_FILE",
    }
    container = f"probe{uuid.uuid4().hex[:12]}"
    argv = [
        sys.executable,
        "-m",
        "tests.component.identity.standard_variables_probe",
        azurite.account_url,
        container,
        authority.state.issuer,
        authority.state.jwks_uri,
        API,
        user_token,
    ]
    done = subprocess.run(argv, env=env, cwd=REPOSITORY, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["source"] == "workload-identity"
    assert result["app"] == {
        "tenant": TENANT_ID,
        "user": HUB_OBJECT_ID,
        "roles": [AGENT],
        "issuer": f"{authority.url}/{TENANT_ID}/v2.0",
    }
    assert result["user"] == {"tenant": TENANT_ID, "user": user_id, "roles": [EXECUTIONS_RUN]}
    assert result["storage_token_refused"] is True  # a v1 storage token is not a token for the hub's API
    for name in ("DefaultAzureCredential", "WorkloadIdentityCredential"):
        assert result[name] == {
            "aud": "https://storage.azure.com",
            "iss": f"https://sts.windows.net/{TENANT_ID}/",
            "appid": HUB_CLIENT_ID,
            "oid": HUB_OBJECT_ID,
            "tid": TENANT_ID,
        }
    assert result["put_status"] == 201
    assert result["round_trip"] is True
    assert result["sealed"]["sha256"] == result["expected_sha256"]


# ---- metadata ------------------------------------------------------------------------------------------------


async def test_openid_metadata_and_keys(authority: TokenAuthorityProcess, client: aiohttp.ClientSession) -> None:
    async with client.get(f"{authority.url}/{TENANT_ID}/v2.0/.well-known/openid-configuration") as response:
        assert response.status == 200
        config = await response.json()
    assert config["issuer"] == f"{authority.url}/{TENANT_ID}/v2.0"
    assert config["token_endpoint"] == f"{authority.url}/{TENANT_ID}/oauth2/v2.0/token"
    assert config["jwks_uri"] == authority.state.jwks_uri
    async with client.get(config["jwks_uri"]) as response:
        keys = (await response.json())["keys"]
    assert len(keys) == 1
    assert keys[0]["kty"] == "RSA"
    assert keys[0]["kid"] == keys[0]["x5t"]
    assert set(keys[0]) >= {"n", "e", "use"}
    assert "d" not in keys[0]  # public members only
    async with client.get(f"{authority.url}/common/discovery/instance?api-version=1.1") as response:
        assert (await response.json())["tenant_discovery_endpoint"].startswith(authority.url)
    async with client.get(f"{authority.url}/{uuid.uuid4()}/v2.0/.well-known/openid-configuration") as response:
        assert response.status == 400
        assert (await response.json())["error_codes"] == [90002]


# ---- the token endpoint --------------------------------------------------------------------------------------


async def test_tokens_for_the_api_and_for_storage(authority: TokenAuthorityProcess, emulators: Emulators) -> None:
    async with emulators.hub_credential() as credential:
        api = _claims((await credential.get_token(API_SCOPE)).token)
        storage = _claims((await credential.get_token(STORAGE_SCOPE)).token)
        cae = _claims((await credential.get_token("https://servicebus.azure.net/.default", enable_cae=True)).token)
    now = time.time()
    assert api["aud"] == API
    assert api["iss"] == f"{authority.url}/{TENANT_ID}/v2.0"
    assert (api["tid"], api["oid"], api["azp"], api["idtyp"], api["ver"]) == (
        TENANT_ID,
        HUB_OBJECT_ID,
        HUB_CLIENT_ID,
        "app",
        "2.0",
    )
    assert api["roles"] == [AGENT]
    assert api["azpacr"] == "2"  # authenticated by an assertion
    assert api["nbf"] <= now < api["exp"]
    assert storage["iss"] == f"https://sts.windows.net/{TENANT_ID}/"
    assert (storage["aud"], storage["ver"], storage["appid"]) == ("https://storage.azure.com", "1.0", HUB_CLIENT_ID)
    assert "roles" not in storage  # Azure RBAC is not in the token
    assert cae["aud"] == "https://servicebus.azure.net"
    assert cae["xms_cc"] == ["CP1"]


async def test_a_federated_token_for_another_subject_is_refused(
    authority: TokenAuthorityProcess, tmp_path: Path
) -> None:
    # the agent's service-account token presented for the execution identity
    token_file = authority.federated_token(AGENT_CLIENT_ID, tmp_path / "agent.token")
    credential = WorkloadIdentityCredential(
        tenant_id=TENANT_ID,
        client_id=HUB_CLIENT_ID,
        token_file_path=str(token_file),
        authority=authority.url,
        connection_verify=str(authority.certificates.ca_cert),
    )
    async with credential:
        with pytest.raises(ClientAuthenticationError, match="AADSTS70021"):
            await credential.get_token(API_SCOPE)


def _forged(directory: Path, **changes: Any) -> str:
    """A service-account token like the cluster's, with ``changes`` to its claims (``key=`` to sign with)."""
    keys = AuthorityKeys.load_or_create(directory)
    valid = _claims(mint_federated_token(directory, subject=HUB_SUBJECT))
    key = changes.pop("key", keys.cluster_key)
    claims = {**valid, **changes}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": keys.cluster_jwk["kid"]})


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"sub": "system:serviceaccount:exthub:someone-else"}, 70021),
        ({"aud": ["api://not-the-exchange"]}, 700212),
        ({"iss": "https://elsewhere.example/cluster/"}, 700211),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200, "nbf": int(time.time()) - 7200}, 700024),
        ({"key": rsa.generate_private_key(public_exponent=65537, key_size=2048)}, 50012),
    ],
)
async def test_forged_assertions_are_refused(
    authority: TokenAuthorityProcess, client: aiohttp.ClientSession, change: dict[str, Any], code: int
) -> None:
    status, body = await _token_request(client, authority, _assertion_form(_forged(authority.directory, **change)))
    assert (status, body["error"], body["error_codes"]) == (400, "invalid_client", [code])
    assert body["error_description"].startswith(f"AADSTS{code}:")
    assert "access_token" not in body


@pytest.mark.parametrize(
    ("form", "status", "error", "code"),
    [
        ({"client_id": str(uuid.uuid4())}, 400, "unauthorized_client", 700016),
        ({"scope": "api://unknown-app/.default"}, 400, "invalid_resource", 500011),
        ({"scope": f"{API}/Executions.Run"}, 400, "invalid_scope", 1002012),
        ({"scope": f"{API_SCOPE} {STORAGE_SCOPE}"}, 400, "invalid_scope", 1002012),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
        ({"client_assertion": "not-a-jwt"}, 400, "invalid_client", 50027),
    ],
)
async def test_bad_token_requests_are_refused(
    authority: TokenAuthorityProcess,
    client: aiohttp.ClientSession,
    form: dict[str, str],
    status: int,
    error: str,
    code: int,
) -> None:
    valid = _assertion_form(mint_federated_token(authority.directory, subject=HUB_SUBJECT))
    got_status, body = await _token_request(client, authority, {**valid, **form})
    assert (got_status, body["error"], body["error_codes"]) == (status, error, [code])


async def test_an_unknown_tenant_is_refused(authority: TokenAuthorityProcess, client: aiohttp.ClientSession) -> None:
    form = _assertion_form(mint_federated_token(authority.directory, subject=HUB_SUBJECT))
    status, body = await _token_request(client, authority, form, tenant=str(uuid.uuid4()))
    assert (status, body["error_codes"]) == (400, [90002])


async def test_client_secrets(authority: TokenAuthorityProcess, client: aiohttp.ClientSession) -> None:
    form = {"grant_type": "client_credentials", "client_id": SECRET_CLIENT_ID, "scope": API_SCOPE}
    status, body = await _token_request(client, authority, {**form, "client_secret": CLIENT_SECRET})
    assert status == 200
    assert _claims(body["access_token"])["azpacr"] == "1"
    status, body = await _token_request(client, authority, {**form, "client_secret": CLIENT_SECRET + "x"})
    assert (status, body["error"], body["error_codes"]) == (401, "invalid_client", [7000215])
    # a client without a secret cannot use one, and one method at a time
    status, body = await _token_request(client, authority, {**form, "client_id": HUB_CLIENT_ID, "client_secret": "x"})
    assert (status, body["error_codes"]) == (401, [7000215])
    status, body = await _token_request(client, authority, form)
    assert (status, body["error_codes"]) == (401, [7000218])


def test_msal_client_secret_path(authority: TokenAuthorityProcess) -> None:
    """The synchronous ClientSecretCredential goes through MSAL (tenant metadata, then the token endpoint)."""
    credential = ClientSecretCredential(
        TENANT_ID,
        SECRET_CLIENT_ID,
        CLIENT_SECRET,
        authority=authority.url,
        disable_instance_discovery=True,
        connection_verify=str(authority.certificates.ca_cert),
    )
    with credential:
        claims = _claims(credential.get_token(API_SCOPE).token)
    assert (claims["aud"], claims["oid"], claims["azp"]) == (API, SECRET_OBJECT_ID, SECRET_CLIENT_ID)


async def test_user_tokens(authority: TokenAuthorityProcess) -> None:
    user_id = str(uuid.uuid4())
    claims = _claims(authority.user_token(audience=API, roles=[HUB_ADMIN], user_id=user_id))
    assert claims["iss"] == f"{authority.url}/{TENANT_ID}/v2.0"
    assert (claims["aud"], claims["oid"], claims["tid"], claims["roles"]) == (API, user_id, TENANT_ID, [HUB_ADMIN])
    assert claims["sub"] != user_id  # pairwise, as Entra ID issues it
    assert "idtyp" not in claims
    other_tenant = str(uuid.uuid4())
    assert _claims(authority.user_token(audience=API, tenant_id=other_tenant))["iss"].endswith(f"/{other_tenant}/v2.0")


async def test_federated_token_files_are_kept_for_the_clients(
    authority: TokenAuthorityProcess, emulators: Emulators
) -> None:
    claims = _claims(emulators.hub_token_file.read_text())
    assert claims["aud"] == [TOKEN_EXCHANGE_AUDIENCE]
    assert claims["sub"] == HUB_SUBJECT
    assert claims["iss"] == authority.state.cluster_issuer
