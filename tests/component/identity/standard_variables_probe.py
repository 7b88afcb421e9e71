"""Run in a child process whose environment holds only the standard variables (``AZURE_AUTHORITY_HOST``,
``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID``, ``AZURE_FEDERATED_TOKEN_FILE``, ``SSL_CERT_FILE``) plus PATH and HOME:
the production code path (``open_identity``, the unmodified azure-identity credentials, the hub's token verifier,
the az-blob provider) against the local token authority and Azurite. Prints one JSON object.

``python -m tests.component.identity.standard_variables_probe ACCOUNT_URL CONTAINER ISSUER JWKS_URI AUDIENCE
USER_TOKEN``
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import uuid
from datetime import timedelta
from typing import Any

import aiohttp
import jwt
from azure.identity.aio import DefaultAzureCredential, WorkloadIdentityCredential

from services.objects.azblob import AzureBlobObjectProvider
from services.objects.port import ObjectRef
from services.platform.auth.verifier import TokenVerifier
from services.platform.azure.identity import open_identity
from services.platform.errors import Unauthenticated
from services.platform.settings import AuthSettings, AzureSettings
from tools.emulators.azurite import create_container

API_SCOPE = "api://exthub/.default"
STORAGE_SCOPE = "https://storage.azure.com/.default"


async def probe(account_url: str, container: str, issuer: str, jwks_uri: str, audience: str, user: str) -> Any:
    results: dict[str, Any] = {}
    verifier = TokenVerifier(AuthSettings(issuers=[issuer], audiences=[audience], jwks_uri=jwks_uri))
    async with open_identity(AzureSettings(blob_account_url=account_url, blob_container=container)) as identity:
        results["source"] = identity.source
        app = await verifier.verify((await identity.credential.get_token(API_SCOPE)).token)
        results["app"] = {"tenant": app.tenant, "user": app.user, "roles": sorted(app.roles), "issuer": app.issuer}
        person = await verifier.verify(user)
        results["user"] = {"tenant": person.tenant, "user": person.user, "roles": sorted(person.roles)}
        storage_token = (await identity.credential.get_token(STORAGE_SCOPE)).token
        try:
            await verifier.verify(storage_token)
            results["storage_token_refused"] = False
        except Unauthenticated:
            results["storage_token_refused"] = True
        for credential_class in (DefaultAzureCredential, WorkloadIdentityCredential):
            async with credential_class() as credential:
                claims = jwt.decode(
                    (await credential.get_token(STORAGE_SCOPE)).token, options={"verify_signature": False}
                )
                results[credential_class.__name__] = {k: claims[k] for k in ("aud", "iss", "appid", "oid", "tid")}
        await create_container(account_url, container, identity.credential)
        provider = await AzureBlobObjectProvider.open(account_url, container, identity.credential)
        try:
            ref = ObjectRef(str(uuid.uuid4()), "input", "document.txt")
            payload = b"uploaded with a user-delegation SAS"
            put = await provider.upload_accessor(ref, timedelta(minutes=5))
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
                async with session.put(put.uri, data=payload, headers=put.headers) as response:
                    results["put_status"] = response.status
                sealed = await provider.seal_input(ref)
                get = await provider.download_accessor(ref, timedelta(minutes=5))
                async with session.get(get.uri) as response:
                    body = await response.read()
            results["sealed"] = None if sealed is None else {"size": sealed.size, "sha256": sealed.sha256}
            results["round_trip"] = body == payload and sealed is not None
            results["expected_sha256"] = hashlib.sha256(payload).hexdigest()
        finally:
            await provider.close()
    return results


def main() -> None:
    print(json.dumps(asyncio.run(probe(*sys.argv[1:7]))))


if __name__ == "__main__":
    main()
