"""``exthub extensions list|search|get|create|versions`` against a real catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.component.cli.conftest import Cli, HubProcess


def extension_file(path: Path, hub: HubProcess, extension_id: str, *versions: str) -> Path:
    """A definition file with ``versions`` of an echo-backed extension (sync profile)."""
    document: dict[str, Any] = {
        "extensionId": extension_id,
        "extension": {
            "displayName": f"Weather {extension_id}",
            "publisher": "Contoso",
            "description": "Forecasts for the CLI tests.",
            "category": "weather",
            "tags": ["forecast", "cli-test"],
        },
        "versions": [
            {
                "versionId": version,
                "version": {
                    "releaseNotes": f"release {version}",
                    "executionTimeout": "60s",
                    "profiles": [
                        {
                            "name": "default",
                            "executionModel": "http-json/sync/v1",
                            "mode": "GATEWAY",
                            "supportedPriorities": ["NORMAL"],
                            "extensionSettings": {"execution_url": f"{hub.echo_url}/execute"},
                        }
                    ],
                },
            }
            for version in versions
        ],
    }
    path.write_text(json.dumps(document))
    return path


def test_create_then_get_list_search_and_versions(cli: Cli, hub: HubProcess, tmp_path: Path) -> None:
    definition = extension_file(tmp_path / "weather.json", hub, "weather-a", "1.2.0", "1.10.0", "2.0.0-rc.1")
    created = cli.json("extensions", "create", "-f", definition)
    assert created["extension"]["name"] == "extensions/weather-a"
    assert created["extension"]["owner"]  # the development token's user owns it
    assert [v["name"].rsplit("/", 1)[-1] for v in created["versions"]] == ["1.2.0", "1.10.0", "2.0.0-rc.1"]

    got = cli.json("extensions", "get", "weather-a")
    assert got["extension"]["displayName"] == "Weather weather-a"
    # newest first in semantic-version order; the latest is the highest non-prerelease
    assert [v["name"].rsplit("/", 1)[-1] for v in got["versions"]] == ["2.0.0-rc.1", "1.10.0", "1.2.0"]
    assert [v["name"] for v in got["versions"] if v.get("latest")] == ["extensions/weather-a/versions/1.10.0"]

    listed = cli.json("extensions", "list", "--filter", 'category = "weather"')
    assert "extensions/weather-a" in [e["name"] for e in listed["extensions"]]
    everything = cli.json("extensions", "list")
    assert {"extensions/echo", "extensions/echo-plain", "extensions/weather-a"} <= {
        e["name"] for e in everything["extensions"]
    }

    found = cli.json("extensions", "search", "forecast")
    assert [e["name"] for e in found["extensions"]] == ["extensions/weather-a"]
    facets = {f["field"]: {v["value"]: v["count"] for v in f["values"]} for f in found["facets"]}
    assert facets["category"] == {"weather": 1}

    versions = cli.json("extensions", "versions", "extensions/weather-a")
    assert len(versions["versions"]) == 3


def test_tables_show_the_resources(cli: Cli, hub: HubProcess, tmp_path: Path) -> None:
    created = cli("extensions", "create", "-f", extension_file(tmp_path / "w.json", hub, "weather-b", "1.0.0"))
    assert created.exit_code == 0, created.stderr
    assert "Created extensions/weather-b" in created.stdout
    listed = cli("extensions", "list")
    assert listed.exit_code == 0
    assert "weather-b" in listed.stdout and "Contoso" in listed.stdout and "echo-plain" in listed.stdout
    searched = cli("extensions", "search", "Weather weather-b")
    assert "weather-b" in searched.stdout and "Facets" in searched.stdout
    details = cli("extensions", "get", "weather-b")
    assert "Forecasts for the CLI tests." in details.stdout and "http-json/sync/v1" in details.stdout
    versions = cli("extensions", "versions", "weather-b")
    assert "1.0.0" in versions.stdout and "yes" in versions.stdout  # the latest mark


def test_create_errors_are_one_line_with_the_right_exit_code(cli: Cli, hub: HubProcess, tmp_path: Path) -> None:
    definition = extension_file(tmp_path / "dup.json", hub, "weather-dup")
    assert cli("extensions", "create", "-f", definition).exit_code == 0
    again = cli("extensions", "create", "-f", definition)
    assert again.exit_code == 1
    assert again.stderr.strip().count("\n") == 0
    assert "ALREADY_EXISTS" in again.stderr and "[EXTENSION_EXISTS]" in again.stderr
    # the hub's field violation, not a client-side guess
    invalid = cli("extensions", "create", "-f", definition, "--id", "Not Valid!")
    assert invalid.exit_code == 1
    assert "INVALID_ARGUMENT" in invalid.stderr and "extension_id" in invalid.stderr
    # a bad file never reaches the hub: exit code 2
    broken = tmp_path / "broken.json"
    broken.write_text('{"extension": {"displayName": "X", "publisher": "Y", "nope": 1}}')
    bad = cli("extensions", "create", "-f", broken)
    assert bad.exit_code == 2 and "broken.json: extension:" in bad.stderr and "nope" in bad.stderr
    missing = cli("extensions", "create", "-f", tmp_path / "missing.json")
    assert missing.exit_code == 2 and "cannot read" in missing.stderr
    # publishing needs the Extensions.Publish role: a read-only token is refused by the hub
    read_only = cli("token", "--roles", "").stdout.strip()
    refused = cli("extensions", "create", "-f", definition, "--id", "weather-ro", "--token", read_only)
    assert refused.exit_code == 1 and "PERMISSION_DENIED" in refused.stderr and "ROLE_REQUIRED" in refused.stderr


def test_unknown_extension_is_not_found(cli: Cli) -> None:
    result = cli("extensions", "get", "no-such-extension")
    assert result.exit_code == 1
    assert result.stderr.startswith("exthub extensions get: NOT_FOUND: ")
    assert result.stderr.strip().endswith("[EXTENSION_NOT_FOUND]") and result.stderr.count("\n") == 1
    assert result.stdout == ""
