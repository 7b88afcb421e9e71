"""``exthub extensions list|search|get|create|versions``: browse and publish the catalog."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from google.protobuf import json_format

from exthub.catalog.v1 import catalog_service_pb2, resources_pb2
from exthub.cli.commands import render
from exthub.cli.commands.common import (
    DEFAULT_DATA_DIR,
    DEFAULT_URL,
    AzureScopeOption,
    CatalogUrlOption,
    DataDirOption,
    HubOptions,
    JsonOption,
    TokenOption,
    UrlOption,
    UsageProblem,
    extension_name,
    print_json,
    run_command,
    stdout_console,
    usage_errors,
)
from exthub.client import HubClient
from exthub.contract.roles import EXTENSIONS_PUBLISH

app = typer.Typer(help="Browse and publish extensions in the catalog.", no_args_is_help=True)

LimitOption = Annotated[int, typer.Option("--limit", min=1, max=10_000, help="Show at most this many.")]
FilterOption = Annotated[
    str, typer.Option("--filter", help='AIP-160 filter, e.g. \'category = "samples" AND tags:"echo"\'.')
]
MAX_PAGE_SIZE = 1000


async def _list_all(
    hub: HubClient, request: catalog_service_pb2.ListExtensionsRequest, limit: int
) -> list[resources_pb2.Extension]:
    found: list[resources_pb2.Extension] = []
    while True:
        request.page_size = min(limit - len(found), MAX_PAGE_SIZE)
        page = await hub.catalog.ListExtensions(request)
        found.extend(page.extensions)
        if not page.next_page_token or len(found) >= limit:
            return found
        request.page_token = page.next_page_token


@app.command("list")
def list_extensions(
    filter_: FilterOption = "",
    order_by: Annotated[str, typer.Option("--order-by", help="e.g. 'create_time desc'.")] = "",
    show_deleted: Annotated[bool, typer.Option("--show-deleted", help="Include soft-deleted extensions.")] = False,
    limit: LimitOption = 100,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    catalog_url: CatalogUrlOption = None,
    token: TokenOption = None,
    azure_scope: AzureScopeOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """List the extensions of the catalog."""
    options = HubOptions(url, catalog_url, token, azure_scope, data_dir)

    async def action() -> int:
        async with options.connect() as hub:
            request = catalog_service_pb2.ListExtensionsRequest(
                filter=filter_, order_by=order_by, show_deleted=show_deleted
            )
            found = await _list_all(hub, request, limit)
        if as_json:
            print_json(catalog_service_pb2.ListExtensionsResponse(extensions=found))
        else:
            stdout_console().print(render.extensions_table(found, title=f"Extensions ({len(found)})"))
        return 0

    run_command("extensions list", options, action)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Words to look for (id, name, tags, description).")] = "",
    filter_: FilterOption = "",
    limit: LimitOption = 50,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    catalog_url: CatalogUrlOption = None,
    token: TokenOption = None,
    azure_scope: AzureScopeOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Search the catalog (ranked by relevance) and show the facets."""
    options = HubOptions(url, catalog_url, token, azure_scope, data_dir)

    async def action() -> int:
        async with options.connect() as hub:
            response = await hub.catalog.SearchExtensions(
                catalog_service_pb2.SearchExtensionsRequest(
                    query=query, filter=filter_, page_size=min(limit, MAX_PAGE_SIZE)
                )
            )
        if as_json:
            print_json(response)
        else:
            console = stdout_console()
            console.print(render.extensions_table(response.extensions, title=f"Results ({response.total_size} in all)"))
            if response.facets:
                console.print(render.facets_table(response.facets))
        return 0

    run_command("extensions search", options, action)


@app.command()
def get(
    extension: Annotated[str, typer.Argument(help="The extension id (echo) or name (extensions/echo).")],
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    catalog_url: CatalogUrlOption = None,
    token: TokenOption = None,
    azure_scope: AzureScopeOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Show one extension and its versions."""
    options = HubOptions(url, catalog_url, token, azure_scope, data_dir)
    with usage_errors("extensions get"):
        name = extension_name(extension)

    async def action() -> int:
        async with options.connect() as hub:
            found = await hub.catalog.GetExtension(catalog_service_pb2.GetExtensionRequest(name=name))
            versions = await hub.catalog.ListExtensionVersions(
                catalog_service_pb2.ListExtensionVersionsRequest(parent=name, page_size=MAX_PAGE_SIZE)
            )
        if as_json:
            print_json(
                {
                    "extension": json_format.MessageToDict(found),
                    "versions": [json_format.MessageToDict(v) for v in versions.versions],
                }
            )
        else:
            console = stdout_console()
            console.print(render.extension_details(found))
            console.print(render.versions_table(versions.versions))
        return 0

    run_command("extensions get", options, action)


@app.command()
def versions(
    extension: Annotated[str, typer.Argument(help="The extension id (echo) or name (extensions/echo).")],
    show_deleted: Annotated[bool, typer.Option("--show-deleted", help="Include deleted versions.")] = False,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    catalog_url: CatalogUrlOption = None,
    token: TokenOption = None,
    azure_scope: AzureScopeOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """List an extension's versions, newest first (semantic-version order)."""
    options = HubOptions(url, catalog_url, token, azure_scope, data_dir)
    with usage_errors("extensions versions"):
        name = extension_name(extension)

    async def action() -> int:
        async with options.connect() as hub:
            found: list[resources_pb2.ExtensionVersion] = []
            request = catalog_service_pb2.ListExtensionVersionsRequest(
                parent=name, show_deleted=show_deleted, page_size=MAX_PAGE_SIZE
            )
            while True:
                page = await hub.catalog.ListExtensionVersions(request)
                found.extend(page.versions)
                if not page.next_page_token:
                    break
                request.page_token = page.next_page_token
        if as_json:
            print_json(catalog_service_pb2.ListExtensionVersionsResponse(versions=found))
        else:
            stdout_console().print(render.versions_table(found, title=f"Versions of {name}"))
        return 0

    run_command("extensions versions", options, action)


@dataclass
class ExtensionFile:
    """An extension definition file: the extension, its id and the versions to create with it."""

    extension_id: str
    extension: resources_pb2.Extension
    versions: list[tuple[str, resources_pb2.ExtensionVersion]] = field(default_factory=list)


def read_extension_file(path: Path, *, extension_id: str | None = None) -> ExtensionFile:
    """Parse ``{"extensionId", "extension": {…}, "versions": [{"versionId", "version": {…}}]}`` (JSON or YAML).

    The messages use the REST JSON form (lowerCamel names, enum names, durations like ``"300s"``).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageProblem(f"cannot read {path}: {error.strerror or error}") from None
    data = _parse_document(path, text)
    if not isinstance(data, dict) or not isinstance(data.get("extension"), dict):
        raise UsageProblem(f'{path}: expected an object with "extension" (and optional "extensionId", "versions")')
    unknown = sorted(set(data) - {"extensionId", "extension", "versions"})
    if unknown:
        raise UsageProblem(f"{path}: unknown top-level field(s) {', '.join(unknown)}")
    chosen = extension_id or data.get("extensionId") or ""
    if not isinstance(chosen, str):
        raise UsageProblem(f"{path}: extensionId must be a string")
    try:
        extension = json_format.ParseDict(data["extension"], resources_pb2.Extension())
    except json_format.ParseError as error:
        raise UsageProblem(f"{path}: extension: {error}") from None
    entries = data.get("versions", [])
    if not isinstance(entries, list):
        raise UsageProblem(f"{path}: versions must be a list")
    parsed: list[tuple[str, resources_pb2.ExtensionVersion]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("versionId"), str):
            raise UsageProblem(f'{path}: versions[{index}] needs "versionId" and "version"')
        try:
            version = json_format.ParseDict(entry.get("version") or {}, resources_pb2.ExtensionVersion())
        except json_format.ParseError as error:
            raise UsageProblem(f"{path}: versions[{index}].version: {error}") from None
        parsed.append((entry["versionId"], version))
    return ExtensionFile(chosen, extension, parsed)


def _parse_document(path: Path, text: str) -> Any:
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise UsageProblem(f"{path}: reading YAML needs PyYAML; use a .json file") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise UsageProblem(f"{path}: not valid YAML ({error})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageProblem(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None


@app.command()
def create(
    file: Annotated[Path, typer.Option("-f", "--file", help="The extension file (JSON or YAML).")],
    extension_id: Annotated[str | None, typer.Option("--id", help="The extension id (overrides the file's).")] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    catalog_url: CatalogUrlOption = None,
    token: TokenOption = None,
    azure_scope: AzureScopeOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Publish an extension and its versions from a file (needs the Extensions.Publish role).

    The file: {"extensionId": "hello", "extension": {"displayName": "Hello", "publisher": "Me"},
    "versions": [{"versionId": "1.0.0", "version": {"profiles": [...]}}]}.
    """
    options = HubOptions(url, catalog_url, token, azure_scope, data_dir)
    with usage_errors("extensions create"):
        definition = read_extension_file(file, extension_id=extension_id)

    async def action() -> int:
        async with options.connect([EXTENSIONS_PUBLISH]) as hub:
            created = await hub.catalog.CreateExtension(
                catalog_service_pb2.CreateExtensionRequest(
                    extension_id=definition.extension_id, extension=definition.extension
                )
            )
            made = [
                await hub.catalog.CreateExtensionVersion(
                    catalog_service_pb2.CreateExtensionVersionRequest(
                        parent=created.name, version_id=version_id, version=version
                    )
                )
                for version_id, version in definition.versions
            ]
        if as_json:
            print_json(
                {
                    "extension": json_format.MessageToDict(created),
                    "versions": [json_format.MessageToDict(v) for v in made],
                }
            )
        else:
            console = stdout_console()
            console.print(f"Created [bold]{created.name}[/bold]")
            console.print(render.extension_details(created))
            if made:
                console.print(render.versions_table(made))
        return 0

    run_command("extensions create", options, action)
