"""What every client command shares: connection options, token choice, running a coroutine, errors, output.

Errors end a command with one line on stderr (``exthub <command>: CODE: message [REASON]``) and a non-zero
exit code (1: the hub or the work failed; 2: the command line was wrong), never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, NoReturn

import grpc
import typer
from google.protobuf import json_format, message, timestamp_pb2
from rich.console import Console

from exthub.client import (
    AzureCredentialTokenProvider,
    DevTokenProvider,
    ExecutionWaitTimeout,
    HubClient,
    ObjectTransferError,
    StaticTokenProvider,
    Target,
    TokenProvider,
    TokenProviderError,
    connect,
    rpc_error_details,
)

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_URL",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "HubOptions",
    "UsageProblem",
    "fail",
    "print_json",
    "run_command",
    "stderr_console",
    "stdout_console",
    "usage_errors",
]

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_DATA_DIR = Path(".exthub-data")
EXIT_FAILED = 1
EXIT_USAGE = 2
_PANEL = "Connection"

UrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="EXTHUB_URL",
        help="The hub: its gateway URL, or a service's host:port when dialling services directly.",
        rich_help_panel=_PANEL,
    ),
]
CatalogUrlOption = Annotated[
    str | None,
    typer.Option(
        "--catalog-url",
        envvar="EXTHUB_CATALOG_URL",
        help="The catalog service when it is not behind --url (services dialled directly). Default: --url.",
        rich_help_panel=_PANEL,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="EXTHUB_TOKEN",
        help="Bearer token. Default: a development token signed with the key in --data-dir.",
        rich_help_panel=_PANEL,
        show_default=False,
    ),
]
AzureScopeOption = Annotated[
    str | None,
    typer.Option(
        "--azure-scope",
        envvar="EXTHUB_AZURE_SCOPE",
        help="Get the token from azure-identity (DefaultAzureCredential) for this scope, e.g. api://exthub/.default.",
        rich_help_panel=_PANEL,
    ),
]
DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="EXTHUB_DATA_DIR",
        help="The local hub's data directory (its development issuer).",
        rich_help_panel=_PANEL,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (REST field names) instead of tables.")]


class UsageProblem(Exception):
    """The command line cannot work (bad JSON, missing file, malformed NAME=PATH): exit code 2."""


def stdout_console() -> Console:
    """A console on the current stdout (looked up at print time, so test runners can capture it)."""
    return Console(highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    """A console on stderr for progress and notes (plain text, no markup), so stdout stays clean for ``--json``."""
    return Console(stderr=True, highlight=False, markup=False)


def fail(command: str, text: str, *, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``exthub <command>: text`` on stderr (one line) and exit with ``code``."""
    typer.secho(f"exthub {command}: {text}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@dataclass(frozen=True)
class HubOptions:
    """The connection options of a command, and how they become a :class:`HubClient`.

    The token is ``--token`` if given, else an Entra ID token for ``--azure-scope``, else what ``exthub token``
    mints for the data dir's profile (a development token for tenant ``local``, or a token of the emulator profile's
    token authority) for user ``developer`` with the roles the command needs.
    """

    url: str = DEFAULT_URL
    catalog_url: str | None = None
    token: str | None = None
    azure_scope: str | None = None
    data_dir: Path = DEFAULT_DATA_DIR

    def target(self) -> Target:
        """The parsed ``--url`` (a :class:`UsageProblem` if it is malformed)."""
        try:
            if self.catalog_url:
                Target.parse(self.catalog_url)
            return Target.parse(self.url)
        except ValueError as error:
            raise UsageProblem(str(error)) from None

    def token_provider(self, roles: Sequence[str]) -> TokenProvider:
        """The token source chosen by the options."""
        if self.token:
            return StaticTokenProvider(self.token)
        if self.azure_scope:
            return AzureCredentialTokenProvider.default(self.azure_scope)
        if profile_is_azure(self.data_dir):
            return StaticTokenProvider(emulator_token(self.data_dir, roles))
        return DevTokenProvider(self.data_dir, roles=roles)

    def connect(self, roles: Iterable[str] = ()) -> HubClient:
        """A client for the hub (call inside the command's coroutine); on the emulator profile its object transfers
        also trust the development CA of the data dir (Azurite serves object URLs with it)."""
        self.target()
        return connect(
            self.url,
            token_provider=self.token_provider(list(roles)),
            catalog_target=self.catalog_url,
            transfer_ssl=emulator_trust(self.data_dir),
        )


def profile_is_azure(data_dir: Path) -> bool:
    """Whether ``exthub up`` last ran the Azure profile with ``data_dir`` (its ``profile.json`` says so)."""
    try:
        document = json.loads((data_dir / "profile.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and document.get("backend") == "azure"


EMULATOR_TRUST_BUNDLE = Path("emulators", "certs", "trust-bundle.pem")


def emulator_trust(data_dir: Path) -> ssl.SSLContext | None:
    """On the emulator profile, a TLS context trusting the system roots and the data dir's development CA."""
    bundle = data_dir / EMULATOR_TRUST_BUNDLE
    if not profile_is_azure(data_dir) or not bundle.exists():
        return None
    return ssl.create_default_context(cafile=str(bundle))


def emulator_token(data_dir: Path, roles: Sequence[str], *, ttl: int = 3600) -> str:
    """A user token (``developer``, the authority's tenant) from the emulator profile's token authority; the
    supervisor module holds the minting (it may load the dev tooling the rest of the CLI must not)."""
    from exthub.cli.supervisor import HubStartError, profile_user_token

    try:
        return profile_user_token(data_dir, backend="azure", roles=list(roles), tenant=None, user="developer", ttl=ttl)
    except HubStartError as error:
        raise TokenProviderError(str(error)) from None


def run_command(command: str, options: HubOptions, action: Callable[[], Coroutine[Any, Any, int]]) -> None:
    """Run ``action`` on a fresh event loop; exit with its code, or with one line explaining the failure."""
    try:
        code = asyncio.run(action())
    except UsageProblem as problem:
        fail(command, str(problem), code=EXIT_USAGE)
    except grpc.aio.AioRpcError as error:
        details = rpc_error_details(error)
        if details.code == grpc.StatusCode.UNAVAILABLE:
            fail(command, f"cannot reach the hub at {options.url}: {details.one_line()}")
        fail(command, details.one_line())
    except (TokenProviderError, ObjectTransferError, ExecutionWaitTimeout) as error:
        fail(command, str(error))
    raise typer.Exit(code)


def print_json(value: message.Message | dict[str, Any] | list[Any]) -> None:
    """Print a message (REST JSON: lowerCamel names, enum names) or plain JSON data on stdout."""
    data = json_format.MessageToDict(value) if isinstance(value, message.Message) else value
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


def timestamp_text(value: timestamp_pb2.Timestamp, *, milliseconds: bool = False) -> str:
    """``2026-01-02T03:04:05Z`` (or ``…05.123Z``), or ``""`` when unset."""
    if not value.seconds and not value.nanos:
        return ""
    moment = value.ToDatetime(tzinfo=UTC)
    if milliseconds:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def extension_name(text: str) -> str:
    """``echo`` or ``extensions/echo`` → ``extensions/echo``."""
    name = text.strip().removeprefix("extensions/")
    if not name or "/" in name:
        raise UsageProblem(f"{text!r} is not an extension id (e.g. echo or extensions/echo)")
    return f"extensions/{name}"


def execution_name(text: str) -> str:
    """``<uuid>`` or ``executions/<uuid>`` → ``executions/<uuid>``."""
    name = text.strip().removeprefix("executions/")
    if not name or "/" in name:
        raise UsageProblem(f"{text!r} is not an execution (e.g. executions/<id> or <id>)")
    return f"executions/{name}"


def read_json_argument(value: str, *, what: str) -> Any:
    """Inline JSON (``{…}``/``[…]``) or the path of a JSON file; a :class:`UsageProblem` otherwise."""
    text = value.strip()
    if text.startswith(("{", "[")):
        source = "the inline JSON"
    else:
        path = Path(text)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise UsageProblem(f"cannot read {what} file {path}: {error.strerror or error}") from None
        source = str(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageProblem(f"{what}: {source} is not valid JSON ({error.msg} at line {error.lineno})") from None


@contextlib.contextmanager
def usage_errors(command: str) -> Iterator[None]:
    """Turn a :class:`UsageProblem` raised while reading the command line into exit code 2."""
    try:
        yield
    except UsageProblem as problem:
        fail(command, str(problem), code=EXIT_USAGE)
