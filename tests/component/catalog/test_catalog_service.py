"""The catalog service through the generated stubs on a real loopback server: success paths and the API's errors."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from exthub.catalog.v1 import catalog_service_pb2 as pb
from exthub.catalog.v1 import catalog_service_pb2_grpc, resources_pb2
from exthub.contract.errors import ERROR_DOMAIN, call_status, field_violations
from exthub.contract.errors import error_info as contract_error_info
from exthub.contract.roles import EXECUTIONS_RUN, EXTENSIONS_PUBLISH, HUB_ADMIN
from exthub.type.v1 import types_pb2
from tests.component.catalog.conftest import TokenFactory

if TYPE_CHECKING:
    Stub = catalog_service_pb2_grpc.CatalogServiceAsyncStub
PUBLISH = (EXTENSIONS_PUBLISH,)
ADMIN = (HUB_ADMIN,)
TIMEOUT = 10


def error_info(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, list[str]]:
    """(code, ErrorInfo.reason, BadRequest field names) decoded from the rich status."""
    status = call_status(error)
    assert status is not None, "every error must carry a google.rpc.Status"
    info = contract_error_info(status)
    assert info is not None and info.domain == ERROR_DOMAIN, "every error must carry an ErrorInfo"
    return error.code(), info.reason, [name for name, _ in field_violations(status)]


async def expect_error(call: object) -> tuple[grpc.StatusCode, str, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return error_info(caught.value)


def extension(**fields: object) -> resources_pb2.Extension:
    base: dict[str, object] = {"display_name": "Image Resizer", "publisher": "Acme", "category": "media"}
    base.update(fields)
    return resources_pb2.Extension(**base)  # type: ignore[arg-type]


def version(**fields: object) -> resources_pb2.ExtensionVersion:
    profile = resources_pb2.ExecutionProfile(
        name="default",
        execution_model="http-json/sync/v1",
        supported_priorities=[types_pb2.NORMAL],
        extension_settings={"execution_url": "http://127.0.0.1:9/execute"},
    )
    base: dict[str, object] = {"release_notes": "first", "profiles": [profile]}
    base.update(fields)
    return resources_pb2.ExtensionVersion(**base)  # type: ignore[arg-type]


async def create(stub: Stub, token: TokenFactory, extension_id: str, **fields: object) -> resources_pb2.Extension:
    return await stub.CreateExtension(
        pb.CreateExtensionRequest(extension_id=extension_id, extension=extension(**fields)),
        metadata=token(roles=PUBLISH),
        timeout=TIMEOUT,
    )


async def test_create_get_update_delete_undelete(stub: Stub, token: TokenFactory) -> None:
    created = await create(stub, token, "image-resize", tags=["media", "photo"], labels={"tier": "gold"})
    assert created.name == "extensions/image-resize"
    assert created.state == resources_pb2.Extension.ACTIVE
    assert created.owner == "tenants/tenant-a/users/user-1"
    assert created.etag and created.HasField("create_time")

    got = await stub.GetExtension(pb.GetExtensionRequest(name=created.name), metadata=token(), timeout=TIMEOUT)
    assert got == created

    patch = resources_pb2.Extension(name=created.name, description="Resizes images", etag=created.etag)
    updated = await stub.UpdateExtension(
        pb.UpdateExtensionRequest(extension=patch, update_mask=field_mask_pb2.FieldMask(paths=["description"])),
        metadata=token(roles=PUBLISH),
        timeout=TIMEOUT,
    )
    assert updated.description == "Resizes images"
    assert updated.display_name == "Image Resizer", "fields outside the mask are kept"
    assert updated.etag != created.etag

    deleted = await stub.DeleteExtension(
        pb.DeleteExtensionRequest(name=created.name, etag=updated.etag), metadata=token(), timeout=TIMEOUT
    )
    assert deleted.state == resources_pb2.Extension.DELETED and deleted.HasField("delete_time")
    listed = await stub.ListExtensions(pb.ListExtensionsRequest(), metadata=token(), timeout=TIMEOUT)
    assert [e.name for e in listed.extensions] == []
    with_deleted = await stub.ListExtensions(
        pb.ListExtensionsRequest(show_deleted=True), metadata=token(), timeout=TIMEOUT
    )
    assert [e.name for e in with_deleted.extensions] == [created.name]

    restored = await stub.UndeleteExtension(
        pb.UndeleteExtensionRequest(name=created.name), metadata=token(), timeout=TIMEOUT
    )
    assert restored.state == resources_pb2.Extension.ACTIVE and not restored.HasField("delete_time")
    code, reason, _ = await expect_error(
        stub.UndeleteExtension(pb.UndeleteExtensionRequest(name=created.name), metadata=token(), timeout=TIMEOUT)
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "EXTENSION_EXISTS")


async def test_update_without_mask_uses_populated_fields_and_stale_etag_aborts(stub: Stub, token: TokenFactory) -> None:
    created = await create(stub, token, "pdf-tools")
    first = await stub.UpdateExtension(
        pb.UpdateExtensionRequest(extension=resources_pb2.Extension(name=created.name, category="docs")),
        metadata=token(),
        timeout=TIMEOUT,
    )
    assert first.category == "docs" and first.display_name == "Image Resizer"
    stale = resources_pb2.Extension(name=created.name, category="other", etag=created.etag)
    code, reason, _ = await expect_error(
        stub.UpdateExtension(pb.UpdateExtensionRequest(extension=stale), metadata=token(), timeout=TIMEOUT)
    )
    assert (code, reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")


async def test_concurrent_updates_with_the_same_etag_one_wins(stub: Stub, token: TokenFactory) -> None:
    created = await create(stub, token, "racey")

    async def update(n: int) -> grpc.StatusCode:
        patch = resources_pb2.Extension(name=created.name, description=f"writer {n}", etag=created.etag)
        try:
            await stub.UpdateExtension(pb.UpdateExtensionRequest(extension=patch), metadata=token(), timeout=TIMEOUT)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    codes = await asyncio.gather(*(update(n) for n in range(8)))
    assert codes.count(grpc.StatusCode.OK) == 1
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.ABORTED}


async def test_generated_id_and_duplicate_id(stub: Stub, token: TokenFactory) -> None:
    generated = await stub.CreateExtension(
        pb.CreateExtensionRequest(extension=extension()), metadata=token(roles=PUBLISH), timeout=TIMEOUT
    )
    assert generated.name.startswith("extensions/ext-")
    await create(stub, token, "dup-id")
    code, reason, _ = await expect_error(
        stub.CreateExtension(
            pb.CreateExtensionRequest(extension_id="dup-id", extension=extension()),
            metadata=token(roles=PUBLISH),
            timeout=TIMEOUT,
        )
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "EXTENSION_EXISTS")


@pytest.mark.parametrize(
    ("extension_id", "fields", "violation"),
    [
        ("Bad_Id", {}, "extension_id"),
        ("ok-id", {"display_name": ""}, "extension.display_name"),
        ("ok-id", {"publisher": ""}, "extension.publisher"),
        ("ok-id", {"logo_uri": "javascript:alert(1)"}, "extension.logo_uri"),
        ("ok-id", {"labels": {"Bad Key": "x"}}, "extension.labels['Bad Key']"),
        ("ok-id", {"tags": ["a"] * 40}, "extension.tags"),
        ("ok-id", {"description": "x" * 10_001}, "extension.description"),
    ],
)
async def test_invalid_fields_get_field_violations(
    stub: Stub, token: TokenFactory, extension_id: str, fields: dict[str, object], violation: str
) -> None:
    code, reason, violations = await expect_error(
        stub.CreateExtension(
            pb.CreateExtensionRequest(extension_id=extension_id, extension=extension(**fields)),
            metadata=token(roles=PUBLISH),
            timeout=TIMEOUT,
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert violation in violations


async def test_bad_names_and_update_mask_are_invalid(stub: Stub, token: TokenFactory) -> None:
    for name in ("extensions/", "extension/x", "extensions/UPPER", "extensions/a/b"):
        code, _, violations = await expect_error(
            stub.GetExtension(pb.GetExtensionRequest(name=name), metadata=token(), timeout=TIMEOUT)
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and violations == ["name"]
    created = await create(stub, token, "masked")
    code, _, violations = await expect_error(
        stub.UpdateExtension(
            pb.UpdateExtensionRequest(
                extension=resources_pb2.Extension(name=created.name),
                update_mask=field_mask_pb2.FieldMask(paths=["no_such_field"]),
            ),
            metadata=token(),
            timeout=TIMEOUT,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and violations == ["update_mask"]


async def test_authentication_and_roles(stub: Stub, token: TokenFactory) -> None:
    request = pb.CreateExtensionRequest(extension_id="authz", extension=extension())
    code, reason, _ = await expect_error(stub.CreateExtension(request, timeout=TIMEOUT))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    code, reason, _ = await expect_error(
        stub.CreateExtension(request, metadata=token(extra_claims={"exp": int(time.time()) - 300}), timeout=TIMEOUT)
    )
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    forged = (("authorization", "Bearer " + token()[0][1].split()[1][:-4] + "AAAA"),)
    code, reason, _ = await expect_error(stub.CreateExtension(request, metadata=forged, timeout=TIMEOUT))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    code, reason, _ = await expect_error(
        stub.CreateExtension(request, metadata=token(roles=(EXECUTIONS_RUN,)), timeout=TIMEOUT)
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")
    admin_created = await stub.CreateExtension(request, metadata=token(roles=ADMIN), timeout=TIMEOUT)
    assert admin_created.name == "extensions/authz"
    code, reason, _ = await expect_error(
        stub.GetExtension(pb.GetExtensionRequest(name="extensions/authz"), timeout=TIMEOUT)
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED, "reading the catalog still needs a valid token"


async def test_only_owner_or_admin_may_change(stub: Stub, token: TokenFactory) -> None:
    created = await create(stub, token, "owned")
    stranger = token(user="user-2")
    patch = resources_pb2.Extension(name=created.name, description="hijack")
    for call in (
        stub.UpdateExtension(pb.UpdateExtensionRequest(extension=patch), metadata=stranger, timeout=TIMEOUT),
        stub.DeleteExtension(pb.DeleteExtensionRequest(name=created.name), metadata=stranger, timeout=TIMEOUT),
        stub.CreateExtensionVersion(
            pb.CreateExtensionVersionRequest(parent=created.name, version_id="1.0.0", version=version()),
            metadata=stranger,
            timeout=TIMEOUT,
        ),
    ):
        code, reason, _ = await expect_error(call)
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_OWNER")
    other_tenant_same_user = token(tenant="tenant-b")
    code, reason, _ = await expect_error(
        stub.UpdateExtension(
            pb.UpdateExtensionRequest(extension=patch), metadata=other_tenant_same_user, timeout=TIMEOUT
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_OWNER")
    by_admin = await stub.UpdateExtension(
        pb.UpdateExtensionRequest(extension=patch), metadata=token(user="root", roles=ADMIN), timeout=TIMEOUT
    )
    assert by_admin.description == "hijack"


async def test_not_found(stub: Stub, token: TokenFactory) -> None:
    code, reason, _ = await expect_error(
        stub.GetExtension(pb.GetExtensionRequest(name="extensions/missing"), metadata=token(), timeout=TIMEOUT)
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "EXTENSION_NOT_FOUND")
    await create(stub, token, "has-no-versions")
    code, reason, _ = await expect_error(
        stub.GetExtensionVersion(
            pb.GetExtensionVersionRequest(name="extensions/has-no-versions/versions/1.0.0"),
            metadata=token(),
            timeout=TIMEOUT,
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "VERSION_NOT_FOUND")
    code, reason, _ = await expect_error(
        stub.GetExtensionVersion(
            pb.GetExtensionVersionRequest(name="extensions/has-no-versions/versions/latest"),
            metadata=token(),
            timeout=TIMEOUT,
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "VERSION_NOT_FOUND")


async def test_versions_semver_order_latest_deprecate_delete(stub: Stub, token: TokenFactory) -> None:
    ext = await create(stub, token, "versioned")
    for version_id in ("1.9.0", "2.0.0-rc.1", "1.10.0", "1.2.3"):
        created = await stub.CreateExtensionVersion(
            pb.CreateExtensionVersionRequest(parent=ext.name, version_id=version_id, version=version()),
            metadata=token(),
            timeout=TIMEOUT,
        )
        assert created.name == f"{ext.name}/versions/{version_id}"
        assert created.state == resources_pb2.ExtensionVersion.ACTIVE
    listed = await stub.ListExtensionVersions(
        pb.ListExtensionVersionsRequest(parent=ext.name), metadata=token(), timeout=TIMEOUT
    )
    assert [v.name.rsplit("/", 1)[1] for v in listed.versions] == ["2.0.0-rc.1", "1.10.0", "1.9.0", "1.2.3"]
    assert [v.latest for v in listed.versions] == [False, True, False, False]

    latest = await stub.GetExtensionVersion(
        pb.GetExtensionVersionRequest(name=f"{ext.name}/versions/latest"), metadata=token(), timeout=TIMEOUT
    )
    assert latest.name.endswith("/1.10.0") and latest.latest
    assert latest.execution_timeout == duration_pb2.Duration(seconds=3600)
    assert latest.profiles[0].extension_settings["execution_url"] == "http://127.0.0.1:9/execute"

    code, reason, _ = await expect_error(
        stub.CreateExtensionVersion(
            pb.CreateExtensionVersionRequest(parent=ext.name, version_id="1.10.0", version=version()),
            metadata=token(),
            timeout=TIMEOUT,
        )
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "VERSION_EXISTS")

    deprecated = await stub.DeprecateExtensionVersion(
        pb.DeprecateExtensionVersionRequest(name=latest.name, etag=latest.etag), metadata=token(), timeout=TIMEOUT
    )
    assert deprecated.state == resources_pb2.ExtensionVersion.DEPRECATED and not deprecated.latest
    new_latest = await stub.GetExtensionVersion(
        pb.GetExtensionVersionRequest(name=f"{ext.name}/versions/latest"), metadata=token(), timeout=TIMEOUT
    )
    assert new_latest.name.endswith("/1.9.0")
    code, reason, _ = await expect_error(
        stub.DeprecateExtensionVersion(
            pb.DeprecateExtensionVersionRequest(name=new_latest.name, etag=latest.etag),
            metadata=token(),
            timeout=TIMEOUT,
        )
    )
    assert (code, reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")

    deleted = await stub.DeleteExtensionVersion(
        pb.DeleteExtensionVersionRequest(name=f"{ext.name}/versions/1.2.3"), metadata=token(), timeout=TIMEOUT
    )
    assert deleted.state == resources_pb2.ExtensionVersion.DELETED and deleted.HasField("delete_time")
    visible = await stub.ListExtensionVersions(
        pb.ListExtensionVersionsRequest(parent=ext.name), metadata=token(), timeout=TIMEOUT
    )
    assert "1.2.3" not in [v.name.rsplit("/", 1)[1] for v in visible.versions]
    everything = await stub.ListExtensionVersions(
        pb.ListExtensionVersionsRequest(parent=ext.name, show_deleted=True, filter="state = DELETED"),
        metadata=token(),
        timeout=TIMEOUT,
    )
    assert [v.name.rsplit("/", 1)[1] for v in everything.versions] == ["1.2.3"]


@pytest.mark.parametrize(
    ("version_id", "mutate", "violation"),
    [
        ("1.0", {}, "version_id"),
        ("1.0.0", {"profiles": []}, "version.profiles"),
        ("1.0.0", {"execution_timeout": duration_pb2.Duration(seconds=-1)}, "version.execution_timeout"),
        (
            "1.0.0",
            {
                "profiles": [
                    resources_pb2.ExecutionProfile(
                        name="default", execution_model="ftp/v9", extension_settings={"execution_url": "http://x/e"}
                    )
                ]
            },
            "version.profiles[0].execution_model",
        ),
        (
            "1.0.0",
            {
                "profiles": [
                    resources_pb2.ExecutionProfile(
                        name="default", execution_model="http-json/sync/v1", mode=resources_pb2.ExecutionProfile.DIRECT
                    )
                ]
            },
            "version.profiles[0].direct_token_ttl",
        ),
    ],
)
async def test_invalid_versions(
    stub: Stub, token: TokenFactory, version_id: str, mutate: dict[str, object], violation: str
) -> None:
    ext = await create(stub, token, "bad-versions")
    code, reason, violations = await expect_error(
        stub.CreateExtensionVersion(
            pb.CreateExtensionVersionRequest(parent=ext.name, version_id=version_id, version=version(**mutate)),
            metadata=token(),
            timeout=TIMEOUT,
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert violation in violations


async def test_list_filter_order_and_paging(stub: Stub, token: TokenFactory) -> None:
    for index in range(7):
        await create(
            stub,
            token,
            f"ext-{index}",
            category="media" if index % 2 else "docs",
            tags=["even"] if index % 2 == 0 else ["odd"],
            labels={"team": "blue" if index < 3 else "red"},
        )
    seen: list[str] = []
    page_token = ""
    while True:
        page = await stub.ListExtensions(
            pb.ListExtensionsRequest(page_size=3, page_token=page_token, order_by="name desc"),
            metadata=token(),
            timeout=TIMEOUT,
        )
        assert page.total_size == 7
        seen += [e.name for e in page.extensions]
        page_token = page.next_page_token
        if not page_token:
            break
    assert seen == [f"extensions/ext-{i}" for i in reversed(range(7))]

    filtered = await stub.ListExtensions(
        pb.ListExtensionsRequest(filter='category = "media" AND labels.team = red AND tags:odd'),
        metadata=token(),
        timeout=TIMEOUT,
    )
    assert sorted(e.name for e in filtered.extensions) == ["extensions/ext-3", "extensions/ext-5"]
    assert filtered.total_size == 2
    negated = await stub.ListExtensions(
        pb.ListExtensionsRequest(filter="NOT category = media OR labels:missing"), metadata=token(), timeout=TIMEOUT
    )
    assert sorted(e.name for e in negated.extensions) == [f"extensions/ext-{i}" for i in (0, 2, 4, 6)]


@pytest.mark.parametrize(
    "bad_filter",
    ["category = ", "nope = 1", "state = EXPLODED", "create_time > yesterday", "(category = a", "tags < 3"],
)
async def test_bad_filters(stub: Stub, token: TokenFactory, bad_filter: str) -> None:
    code, reason, violations = await expect_error(
        stub.ListExtensions(pb.ListExtensionsRequest(filter=bad_filter), metadata=token(), timeout=TIMEOUT)
    )
    assert (code, reason, violations) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FILTER", ["filter"])


async def test_bad_page_tokens_and_sizes(stub: Stub, token: TokenFactory) -> None:
    for index in range(3):
        await create(stub, token, f"paged-{index}")
    first = await stub.ListExtensions(pb.ListExtensionsRequest(page_size=1), metadata=token(), timeout=TIMEOUT)
    assert first.next_page_token
    tampered = (
        first.next_page_token[:-2] + ("A" if first.next_page_token[-2] != "A" else "B") + first.next_page_token[-1]
    )
    for request in (
        pb.ListExtensionsRequest(page_size=1, page_token=tampered),
        pb.ListExtensionsRequest(page_size=1, page_token="garbage"),
        pb.ListExtensionsRequest(page_size=1, page_token=first.next_page_token, filter='category = "media"'),
    ):
        code, reason, violations = await expect_error(stub.ListExtensions(request, metadata=token(), timeout=TIMEOUT))
        assert (code, reason, violations) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", ["page_token"])
    code, _, violations = await expect_error(
        stub.ListExtensions(pb.ListExtensionsRequest(page_size=-1), metadata=token(), timeout=TIMEOUT)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and violations == ["page_size"]
    code, reason, _ = await expect_error(
        stub.ListExtensions(pb.ListExtensionsRequest(order_by="owner"), metadata=token(), timeout=TIMEOUT)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_search_ranking_facets_and_paging(stub: Stub, token: TokenFactory) -> None:
    await create(
        stub, token, "photo-booth", display_name="Photo Booth", publisher="Acme", tags=["fun"], category="media"
    )
    await create(
        stub, token, "gallery", display_name="Gallery", publisher="Acme", tags=["photo", "album"], category="media"
    )
    await create(
        stub,
        token,
        "archiver",
        display_name="Archiver",
        publisher="Zed",
        tags=["zip"],
        category="tools",
        description="keeps every photo safe",
    )
    await create(stub, token, "unrelated", display_name="Calculator", publisher="Zed", category="tools")
    result = await stub.SearchExtensions(pb.SearchExtensionsRequest(query="photo"), metadata=token(), timeout=TIMEOUT)
    assert [e.name for e in result.extensions] == [
        "extensions/photo-booth",
        "extensions/gallery",
        "extensions/archiver",
    ]
    assert result.total_size == 3
    facets = {f.field: {v.value: v.count for v in f.values} for f in result.facets}
    assert facets["category"] == {"media": 2, "tools": 1}
    assert facets["publisher"] == {"Acme": 2, "Zed": 1}
    assert facets["tags"] == {"album": 1, "fun": 1, "photo": 1, "zip": 1}

    filtered = await stub.SearchExtensions(
        pb.SearchExtensionsRequest(query="photo", filter='publisher = "Zed"'), metadata=token(), timeout=TIMEOUT
    )
    assert [e.name for e in filtered.extensions] == ["extensions/archiver"]

    first = await stub.SearchExtensions(
        pb.SearchExtensionsRequest(query="photo", page_size=2), metadata=token(), timeout=TIMEOUT
    )
    second = await stub.SearchExtensions(
        pb.SearchExtensionsRequest(query="photo", page_size=2, page_token=first.next_page_token),
        metadata=token(),
        timeout=TIMEOUT,
    )
    assert [e.name for e in [*first.extensions, *second.extensions]] == [e.name for e in result.extensions]
    assert not second.next_page_token
    code, reason, _ = await expect_error(
        stub.SearchExtensions(
            pb.SearchExtensionsRequest(query="other", page_size=2, page_token=first.next_page_token),
            metadata=token(),
            timeout=TIMEOUT,
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")

    await stub.DeleteExtension(pb.DeleteExtensionRequest(name="extensions/gallery"), metadata=token(), timeout=TIMEOUT)
    after_delete = await stub.SearchExtensions(
        pb.SearchExtensionsRequest(query="photo"), metadata=token(), timeout=TIMEOUT
    )
    assert "extensions/gallery" not in [e.name for e in after_delete.extensions]
    renamed = resources_pb2.Extension(name="extensions/unrelated", display_name="Photo Calculator")
    await stub.UpdateExtension(pb.UpdateExtensionRequest(extension=renamed), metadata=token(), timeout=TIMEOUT)
    after_update = await stub.SearchExtensions(
        pb.SearchExtensionsRequest(query="photo calc"), metadata=token(), timeout=TIMEOUT
    )
    assert [e.name for e in after_update.extensions] == ["extensions/unrelated"]
    hostile = await stub.SearchExtensions(
        pb.SearchExtensionsRequest(query='" OR 1=1 -- ; DROP TABLE documents; NEAR(*'),
        metadata=token(),
        timeout=TIMEOUT,
    )
    assert hostile.total_size == 0


async def test_data_survives_restart(settings: object, stub: Stub, token: TokenFactory, catalog: object) -> None:
    from services.catalog.app import CatalogApp, start_catalog
    from services.platform.settings import Settings

    assert isinstance(catalog, CatalogApp) and isinstance(settings, Settings)
    await create(stub, token, "durable", tags=["persist"])
    await catalog.stop(0)
    again = await start_catalog(settings, port=0)
    try:
        async with grpc.aio.insecure_channel(again.address) as channel:
            stub2 = catalog_service_pb2_grpc.CatalogServiceStub(channel)
            got = await stub2.GetExtension(
                pb.GetExtensionRequest(name="extensions/durable"), metadata=token(), timeout=TIMEOUT
            )
            assert list(got.tags) == ["persist"]
            found = await stub2.SearchExtensions(
                pb.SearchExtensionsRequest(query="durable"), metadata=token(), timeout=TIMEOUT
            )
            assert found.total_size == 1
    finally:
        await again.stop(0)
