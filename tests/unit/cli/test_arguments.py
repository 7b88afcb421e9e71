"""How the client commands read their command line: versions, NAME=VALUE pairs, JSON, extension files, tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exthub.cli.commands.common import HubOptions, UsageProblem, execution_name, extension_name, read_json_argument
from exthub.cli.commands.extensions import read_extension_file
from exthub.cli.commands.render import tidy_numbers
from exthub.cli.commands.run import parse_assignments, parse_version
from exthub.client import AzureCredentialTokenProvider, DevTokenProvider, StaticTokenProvider
from exthub.contract.roles import EXECUTIONS_RUN


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("echo", "extensions/echo/versions/latest"),
        ("echo@1.0.0", "extensions/echo/versions/1.0.0"),
        ("echo@2.0.0-rc.1", "extensions/echo/versions/2.0.0-rc.1"),
        ("extensions/echo", "extensions/echo/versions/latest"),
        ("extensions/echo/versions/1.0.0", "extensions/echo/versions/1.0.0"),
    ],
)
def test_versions(text: str, name: str) -> None:
    assert parse_version(text) == name


@pytest.mark.parametrize("text", ["", "@1.0.0", "echo@", "a/b", "extensions/", "extensions/e/x/1", "echo@1/2"])
def test_bad_versions(text: str) -> None:
    with pytest.raises(UsageProblem, match="is not an extension version"):
        parse_version(text)


def test_names() -> None:
    assert extension_name("echo") == extension_name("extensions/echo") == "extensions/echo"
    assert execution_name("abc") == execution_name("executions/abc") == "executions/abc"
    for bad in ("", "a/b"):
        with pytest.raises(UsageProblem):
            extension_name(bad)
        with pytest.raises(UsageProblem):
            execution_name(bad)


def test_assignments() -> None:
    assert parse_assignments(["a=1", "b=x=y"], what="--label") == {"a": "1", "b": "x=y"}
    for bad in (["a"], ["=1"], ["a="]):
        with pytest.raises(UsageProblem, match="must look like NAME=VALUE"):
            parse_assignments(bad, what="--label")
    with pytest.raises(UsageProblem, match="given twice"):
        parse_assignments(["a=1", "a=2"], what="--label")


def test_json_arguments(tmp_path: Path) -> None:
    assert read_json_argument('{"a": [1]}', what="--request") == {"a": [1]}
    path = tmp_path / "r.json"
    path.write_text('{"b": true}')
    assert read_json_argument(str(path), what="--request") == {"b": True}
    with pytest.raises(UsageProblem, match="cannot read --request file"):
        read_json_argument(str(tmp_path / "missing.json"), what="--request")
    path.write_text("{oops")
    with pytest.raises(UsageProblem, match=r"r\.json is not valid JSON"):
        read_json_argument(str(path), what="--request")


def test_extension_file(tmp_path: Path) -> None:
    path = tmp_path / "ext.json"
    path.write_text(
        json.dumps(
            {
                "extensionId": "hello",
                "extension": {"displayName": "Hello", "publisher": "Me", "tags": ["a"]},
                "versions": [
                    {
                        "versionId": "1.0.0",
                        "version": {
                            "executionTimeout": "90s",
                            "profiles": [{"name": "default", "executionModel": "http-json/sync/v1"}],
                            "inputs": [{"name": "doc", "required": True}],
                        },
                    }
                ],
            }
        )
    )
    parsed = read_extension_file(path)
    assert parsed.extension_id == "hello" and parsed.extension.tags == ["a"]
    ((version_id, version),) = parsed.versions
    assert version_id == "1.0.0" and version.execution_timeout.seconds == 90 and version.inputs[0].required
    assert read_extension_file(path, extension_id="other").extension_id == "other"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", 'expected an object with "extension"'),
        ('{"extension": {}, "extra": 1}', "unknown top-level field"),
        ('{"extension": {"nope": 1}}', "extension: "),
        ('{"extension": {}, "versions": {}}', "versions must be a list"),
        ('{"extension": {}, "versions": [{"version": {}}]}', 'versions\\[0\\] needs "versionId"'),
        ('{"extension": {}, "versions": [{"versionId": "1", "version": {"profiles": 3}}]}', r"versions\[0\]\.version"),
        ("{", "not valid JSON"),
    ],
)
def test_bad_extension_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UsageProblem, match=message):
        read_extension_file(path)


def test_token_choice(tmp_path: Path) -> None:
    assert isinstance(HubOptions(token="t").token_provider([]), StaticTokenProvider)
    azure = HubOptions(azure_scope="api://exthub/.default").token_provider([])
    assert isinstance(azure, AzureCredentialTokenProvider) and azure.scope == "api://exthub/.default"
    dev = HubOptions(data_dir=tmp_path).token_provider([EXECUTIONS_RUN])
    assert isinstance(dev, DevTokenProvider) and dev.roles == (EXECUTIONS_RUN,) and dev.tenant == "local"
    assert isinstance(HubOptions(token="t", azure_scope="s").token_provider([]), StaticTokenProvider)
    with pytest.raises(UsageProblem, match="unsupported scheme"):
        HubOptions(url="ftp://x:1").target()


def test_struct_numbers_are_shown_as_integers_when_whole() -> None:
    assert tidy_numbers({"a": 1.0, "b": [2.5, 3.0], "c": "1.0", "d": True}) == {
        "a": 1,
        "b": [2.5, 3],
        "c": "1.0",
        "d": True,
    }
