"""Every catalog REST route through the real Envoy in front of the real catalog service."""

from __future__ import annotations

import aiohttp

from exthub.contract.roles import EXECUTIONS_RUN, EXTENSIONS_PUBLISH, HUB_ADMIN
from gateway.envoy import RunningEnvoy
from services.catalog.app import CatalogApp
from tests.component.gateway.conftest import Bearer, call

PUBLISH = (EXTENSIONS_PUBLISH,)
ADMIN = (HUB_ADMIN,)
UPSTREAM_RQ = "cluster.catalog.upstream_rq_total"


def extension_body(**fields: object) -> dict[str, object]:
    return {"displayName": "Image Resizer", "publisher": "Acme", "category": "media", **fields}


def version_body(**fields: object) -> dict[str, object]:
    profile = {
        "name": "default",
        "executionModel": "http-json/sync/v1",
        "supportedPriorities": ["NORMAL"],
        "extensionSettings": {"execution_url": "https://extensions.example.com/image-resize"},
    }
    return {"releaseNotes": "first", "profiles": [profile], **fields}


async def test_extension_lifecycle(http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer) -> None:
    publisher, reader = bearer(roles=PUBLISH), bearer()
    created = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions",
        params={"extensionId": "image-resize"},
        json_body=extension_body(tags=["media", "photo"], labels={"tier": "gold"}),
        headers=publisher,
    )
    assert created.status == 200, created.body
    ext = created.body
    assert ext["name"] == "extensions/image-resize"
    assert ext["state"] == "ACTIVE"  # enums travel as names
    assert ext["owner"] == "tenants/tenant-a/users/user-1"
    assert ext["etag"] and ext["createTime"].endswith("Z")
    assert ext["labels"] == {"tier": "gold"} and ext["tags"] == ["media", "photo"]
    assert ext["description"] == "", "always_print_primitive_fields: a stable REST shape"

    got = await call(http, gateway, "GET", "/v1/extensions/image-resize", headers=reader)
    assert (got.status, got.body) == (200, ext)

    # PATCH with updateMask (query, FieldMask as a comma list of JSON names) and the etag in the body
    patched = await call(
        http,
        gateway,
        "PATCH",
        "/v1/extensions/image-resize",
        params={"updateMask": "description,displayName"},
        json_body={"description": "Resizes images", "displayName": "Resizer", "etag": ext["etag"]},
        headers=publisher,
    )
    assert patched.status == 200, patched.body
    assert patched.body["description"] == "Resizes images" and patched.body["displayName"] == "Resizer"
    assert patched.body["category"] == "media", "fields outside the mask are kept"
    assert patched.body["etag"] != ext["etag"]

    stale = await call(
        http,
        gateway,
        "PATCH",
        "/v1/extensions/image-resize",
        params={"updateMask": "description"},
        json_body={"description": "again", "etag": ext["etag"]},
        headers=publisher,
    )
    assert (stale.status, stale.code) == (409, "ABORTED"), stale.body
    assert stale.reason == "ETAG_MISMATCH"

    deleted = await call(http, gateway, "DELETE", "/v1/extensions/image-resize", headers=publisher)
    assert deleted.status == 200 and deleted.body["state"] == "DELETED" and deleted.body["deleteTime"]
    media = {"filter": 'category = "media"'}  # the hub's own sample extensions are in category "samples"
    listed = await call(http, gateway, "GET", "/v1/extensions", params=media, headers=reader)
    assert listed.status == 200 and listed.body["extensions"] == [] and listed.body["totalSize"] == 0
    with_deleted = await call(
        http, gateway, "GET", "/v1/extensions", params={**media, "showDeleted": "true"}, headers=reader
    )
    assert [e["name"] for e in with_deleted.body["extensions"]] == ["extensions/image-resize"]

    restored = await call(
        http, gateway, "POST", "/v1/extensions/image-resize:undelete", json_body={}, headers=publisher
    )
    assert restored.status == 200 and restored.body["state"] == "ACTIVE"
    again = await call(http, gateway, "POST", "/v1/extensions/image-resize:undelete", json_body={}, headers=publisher)
    assert (again.status, again.code, again.reason) == (409, "ALREADY_EXISTS", "EXTENSION_EXISTS")

    duplicate = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions",
        params={"extensionId": "image-resize"},
        json_body=extension_body(),
        headers=publisher,
    )
    assert (duplicate.status, duplicate.code, duplicate.reason) == (409, "ALREADY_EXISTS", "EXTENSION_EXISTS")

    other_user = bearer(roles=PUBLISH, user="user-2")
    not_owner = await call(
        http, gateway, "DELETE", "/v1/extensions/image-resize", headers=other_user
    )  # passes RBAC (AUTHENTICATED), refused by the service
    assert (not_owner.status, not_owner.code, not_owner.reason) == (403, "PERMISSION_DENIED", "NOT_OWNER")
    admin = await call(http, gateway, "DELETE", "/v1/extensions/image-resize", headers=bearer(roles=ADMIN))
    assert admin.status == 200


async def test_list_filter_order_paging_and_search(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer
) -> None:
    publisher, reader = bearer(roles=PUBLISH), bearer()
    specs: list[tuple[str, dict[str, object]]] = [
        ("photo-resize", {"displayName": "Photo Resize", "category": "media", "tags": ["photo"]}),
        ("video-cut", {"displayName": "Video Cut", "category": "media", "tags": ["video"]}),
        ("tax-report", {"displayName": "Tax Report", "category": "finance", "publisher": "Globex"}),
    ]
    for extension_id, fields in specs:
        created = await call(
            http,
            gateway,
            "POST",
            "/v1/extensions",
            params={"extensionId": extension_id},
            json_body=extension_body(**fields),
            headers=publisher,
        )
        assert created.status == 200, created.body

    params = {"filter": 'category = "media"', "orderBy": "display_name desc", "pageSize": "1"}
    first = await call(http, gateway, "GET", "/v1/extensions", params=params, headers=reader)
    assert first.status == 200, first.body
    assert [e["name"] for e in first.body["extensions"]] == ["extensions/video-cut"]
    assert first.body["totalSize"] == 2 and first.body["nextPageToken"]
    second = await call(
        http,
        gateway,
        "GET",
        "/v1/extensions",
        params={**params, "pageToken": first.body["nextPageToken"]},
        headers=reader,
    )
    assert [e["name"] for e in second.body["extensions"]] == ["extensions/photo-resize"]
    assert second.body["nextPageToken"] == ""

    found = await call(http, gateway, "GET", "/v1/extensions:search", params={"query": "photo"}, headers=reader)
    assert found.status == 200, found.body
    assert found.body["extensions"][0]["name"] == "extensions/photo-resize"
    assert found.body["totalSize"] >= 1
    facets = {f["field"]: f["values"] for f in found.body["facets"]}
    assert set(facets) == {"category", "publisher", "tags"}
    assert {"value": "media", "count": 1} in facets["category"]

    everything = await call(http, gateway, "GET", "/v1/extensions:search", params={"query": ""}, headers=reader)
    categories = {
        v["value"]: v["count"] for v in {f["field"]: f["values"] for f in everything.body["facets"]}["category"]
    }
    assert categories == {"media": 2, "finance": 1, "samples": 2}  # + echo and echo-plain of the hub

    # query parameters use the JSON names; '+' is a space (query_param_unescape_plus)
    plus = await call(http, gateway, "GET", "/v1/extensions?filter=category+%3D+%22finance%22", headers=reader)
    assert [e["name"] for e in plus.body["extensions"]] == ["extensions/tax-report"]


async def test_versions(http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer) -> None:
    publisher, reader = bearer(roles=PUBLISH), bearer()
    created = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions",
        params={"extensionId": "versioned"},
        json_body=extension_body(),
        headers=publisher,
    )
    assert created.status == 200
    for version_id in ("1.9.0", "2.0.0-rc.1", "1.10.0"):
        made = await call(
            http,
            gateway,
            "POST",
            "/v1/extensions/versioned/versions",
            params={"versionId": version_id},
            json_body=version_body(),
            headers=publisher,
        )
        assert made.status == 200, made.body
        assert made.body["name"] == f"extensions/versioned/versions/{version_id}" and made.body["state"] == "ACTIVE"
    exists = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions/versioned/versions",
        params={"versionId": "1.9.0"},
        json_body=version_body(),
        headers=publisher,
    )
    assert (exists.status, exists.reason) == (409, "VERSION_EXISTS")

    listed = await call(http, gateway, "GET", "/v1/extensions/versioned/versions", headers=reader)
    assert [v["name"].rsplit("/", 1)[1] for v in listed.body["versions"]] == ["2.0.0-rc.1", "1.10.0", "1.9.0"]
    paged = await call(
        http, gateway, "GET", "/v1/extensions/versioned/versions", params={"pageSize": "2"}, headers=reader
    )
    assert len(paged.body["versions"]) == 2 and paged.body["nextPageToken"]

    one = await call(http, gateway, "GET", "/v1/extensions/versioned/versions/1.9.0", headers=reader)
    assert one.status == 200
    assert one.body["executionTimeout"] == "3600s"  # Duration as JSON string
    assert one.body["profiles"][0]["supportedPriorities"] == ["NORMAL"]
    latest = await call(http, gateway, "GET", "/v1/extensions/versioned/versions/latest", headers=reader)
    assert latest.body["name"].endswith("/1.10.0") and latest.body["latest"] is True

    deprecated = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions/versioned/versions/1.10.0:deprecate",
        json_body={"etag": latest.body["etag"]},
        headers=publisher,
    )
    assert deprecated.status == 200 and deprecated.body["state"] == "DEPRECATED"
    new_latest = await call(http, gateway, "GET", "/v1/extensions/versioned/versions/latest", headers=reader)
    assert new_latest.body["name"].endswith("/1.9.0")

    removed = await call(http, gateway, "DELETE", "/v1/extensions/versioned/versions/1.9.0", headers=publisher)
    assert removed.status == 200 and removed.body["state"] == "DELETED"
    missing = await call(http, gateway, "GET", "/v1/extensions/versioned/versions/9.9.9", headers=reader)
    assert (missing.status, missing.code, missing.reason) == (404, "NOT_FOUND", "VERSION_NOT_FOUND")
    # case-insensitive enum parsing on input
    lower = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions/versioned/versions",
        params={"versionId": "3.0.0"},
        json_body=version_body(profiles=[{**version_body()["profiles"][0], "supportedPriorities": ["high"]}]),  # type: ignore[index]
        headers=publisher,
    )
    assert lower.status == 200, lower.body
    assert lower.body["profiles"][0]["supportedPriorities"] == ["HIGH"]


async def test_error_bodies(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, catalog: CatalogApp
) -> None:
    publisher, reader = bearer(roles=PUBLISH), bearer()
    invalid = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions",
        params={"extensionId": "Bad_Id"},
        json_body=extension_body(publisher=""),
        headers=publisher,
    )
    assert (invalid.status, invalid.code, invalid.reason) == (400, "INVALID_ARGUMENT", "INVALID_FIELD")
    assert set(invalid.field_violations) == {"extension_id"}

    bad_filter = await call(http, gateway, "GET", "/v1/extensions", params={"filter": "(("}, headers=reader)
    assert (bad_filter.status, bad_filter.code, bad_filter.reason) == (400, "INVALID_ARGUMENT", "INVALID_FILTER")
    bad_token = await call(http, gateway, "GET", "/v1/extensions", params={"pageToken": "nope"}, headers=reader)
    assert (bad_token.status, bad_token.reason) == (400, "INVALID_PAGE_TOKEN")
    not_found = await call(http, gateway, "GET", "/v1/extensions/nothing-here", headers=reader)
    assert (not_found.status, not_found.code, not_found.reason) == (404, "NOT_FOUND", "EXTENSION_NOT_FOUND")
    assert "Traceback" not in not_found.body["message"]

    # the gateway's own refusals: the request never reaches the catalog
    before = await gateway.stat(UPSTREAM_RQ)
    unknown_route = await call(http, gateway, "GET", "/v1/nothing", headers=reader)
    assert (unknown_route.status, unknown_route.code, unknown_route.reason) == (404, "NOT_FOUND", "ROUTE_NOT_FOUND")
    wrong_verb = await call(http, gateway, "PUT", "/v1/extensions/x", json_body={}, headers=reader)
    assert wrong_verb.status == 404
    unknown_query = await call(http, gateway, "GET", "/v1/extensions", params={"bogus": "1"}, headers=reader)
    assert (unknown_query.status, unknown_query.code, unknown_query.reason) == (
        400,
        "INVALID_ARGUMENT",
        "INVALID_REQUEST",
    )
    assert "bogus" in unknown_query.body["message"]
    unauthenticated = await call(http, gateway, "GET", "/v1/extensions")
    assert (unauthenticated.status, unauthenticated.code, unauthenticated.reason) == (
        401,
        "UNAUTHENTICATED",
        "TOKEN_INVALID",
    )
    assert unauthenticated.headers.get("www-authenticate", "").startswith("Bearer")
    no_role = await call(http, gateway, "POST", "/v1/extensions", json_body=extension_body(), headers=reader)
    assert (no_role.status, no_role.code, no_role.reason) == (403, "PERMISSION_DENIED", "ROLE_REQUIRED")
    assert await gateway.stat(UPSTREAM_RQ) == before

    # body problems are found while the body streams (the upstream call is started, then reset): still 400
    collision = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions/x:undelete",
        json_body={"name": "extensions/y"},
        headers=reader,
    )
    assert collision.status == 400, "path/body binding collisions are refused"
    bad_json = await call(
        http, gateway, "POST", "/v1/extensions", json_body={"displayName": 5, "tags": "x"}, headers=publisher
    )
    assert (bad_json.status, bad_json.code) == (400, "INVALID_ARGUMENT")
    assert "display_name" in bad_json.body["message"]

    # the backend goes away: 503 UNAVAILABLE as JSON google.rpc.Status
    await catalog.stop(0)
    down = await call(http, gateway, "GET", "/v1/extensions", headers=reader)
    assert (down.status, down.code, down.reason) == (503, "UNAVAILABLE", "BACKEND_UNAVAILABLE")


async def test_stale_etag_is_aborted_and_409(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer
) -> None:
    """A stale etag is ABORTED ``ETAG_MISMATCH`` (docs/architecture.md, AIP-154), which REST sees as **409**.

    Decision: the gateway keeps the canonical ``google.rpc.Code`` → HTTP mapping (``code.proto``: ABORTED → 409
    Conflict; Envoy's ``convert_grpc_status`` does the same), rather than rewriting it to 412. 412 Precondition
    Failed answers an HTTP conditional header (``If-Match``), which this API does not use: the etag travels in
    the body, as in Google's APIs, which answer a stale etag with 409 ABORTED too. REST and gRPC callers thus
    get the same ``google.rpc.Status`` and tell the case apart by ``ErrorInfo.reason``; FAILED_PRECONDITION
    (an invalid transition, a deprecated version) stays 400.
    """
    publisher = bearer(roles=PUBLISH)
    created = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions",
        params={"extensionId": "etags"},
        json_body=extension_body(),
        headers=publisher,
    )
    stale_etag = created.body["etag"]
    updated = await call(
        http,
        gateway,
        "PATCH",
        "/v1/extensions/etags",
        params={"updateMask": "description"},
        json_body={"description": "v2", "etag": stale_etag},
        headers=publisher,
    )
    assert updated.status == 200
    for method, path, body in (
        ("PATCH", "/v1/extensions/etags?updateMask=description", {"description": "v3", "etag": stale_etag}),
        ("DELETE", f"/v1/extensions/etags?etag={stale_etag}", None),
    ):
        stale = await call(http, gateway, method, path, json_body=body, headers=publisher)
        assert (stale.status, stale.code, stale.reason) == (409, "ABORTED", "ETAG_MISMATCH"), (method, stale.body)
    version = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions/etags/versions",
        params={"versionId": "1.0.0"},
        json_body=version_body(),
        headers=publisher,
    )
    deprecated = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions/etags/versions/1.0.0:deprecate",
        json_body={"etag": version.body["etag"]},
        headers=publisher,
    )
    assert deprecated.status == 200
    stale_version = await call(
        http,
        gateway,
        "DELETE",
        "/v1/extensions/etags/versions/1.0.0",
        params={"etag": version.body["etag"]},
        headers=publisher,
    )
    assert (stale_version.status, stale_version.code, stale_version.reason) == (409, "ABORTED", "ETAG_MISMATCH")
    # FAILED_PRECONDITION keeps its canonical 400: running a deprecated version
    not_active = await call(
        http,
        gateway,
        "POST",
        "/v1/executions",
        json_body={"extensionVersion": "extensions/etags/versions/1.0.0"},
        headers=bearer(roles=(EXECUTIONS_RUN,)),
    )
    assert (not_active.status, not_active.code, not_active.reason) == (400, "FAILED_PRECONDITION", "VERSION_NOT_ACTIVE")
