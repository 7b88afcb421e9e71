"""Render a deployment for review before it is applied: Terraform outputs (+ operator overrides) → a values
file, the gateway's Envoy configuration and the Kubernetes manifests the chart makes of them.

    python -m deploy.render --tf-outputs outputs.json -f my-env.yaml --out out/   # terraform output -json
    python -m deploy.render --example --out out/                                 # the example environment

writes ``out/values.yaml``, ``out/envoy.yaml`` (``gateway.render --target azure``, descriptor inline) and
``out/manifests.yaml`` (``helm template``, after ``helm lint --strict``), and prints the ``helm upgrade``
command that applies exactly these files.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploy import tools
from gateway.render import dump_config, render_config

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "exthub"
EXAMPLES = Path(__file__).resolve().parent / "examples"
EXAMPLE_OUTPUTS = EXAMPLES / "terraform-outputs.json"
IMAGE_NAME = "exthub"
ENVOY_IMAGE = "envoyproxy/envoy"

#: The Terraform outputs this command reads (terraform/modules/exthub/outputs.tf; a test keeps them equal).
OUTPUT_NAMES = (
    "tenant_id",
    "api_client_id",
    "api_app_id_uri",
    "namespace",
    "release_name",
    "public_host",
    "acr_login_server",
    "app_gateway_subnet_cidrs",
    "cosmos_endpoint",
    "cosmos_database",
    "servicebus_namespace",
    "blob_account_url",
    "blob_container",
    "key_vault_name",
    "appinsights_secret_name",
    "page_token_secret_name",
    "identity_client_ids",
)


def read_outputs(path: Path) -> dict[str, Any]:
    """``terraform output -json`` (``{"name": {"value": …}}``) as ``{"name": value}``; every needed output."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    missing = [name for name in OUTPUT_NAMES if name not in raw]
    if missing:
        raise ValueError(f"{path}: missing Terraform outputs: {', '.join(missing)}")
    return {name: raw[name]["value"] for name in OUTPUT_NAMES}


def values_from_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The chart values Terraform decides (the rest keeps the chart's defaults or comes from overrides)."""
    identities = outputs["identity_client_ids"]
    host = outputs["public_host"]
    return {
        "image": {"repository": f"{outputs['acr_login_server']}/{IMAGE_NAME}"},
        # the official Envoy image, mirrored into the cluster's registry (docs/deploy.md: az acr import)
        "gateway": {"image": {"repository": f"{outputs['acr_login_server']}/{ENVOY_IMAGE}"}},
        "auth": {
            "tenantId": outputs["tenant_id"],
            "clientId": outputs["api_client_id"],
            "appIdUri": outputs["api_app_id_uri"],
        },
        "publicUrl": f"https://{host}",
        "azure": {
            "cosmos": {"endpoint": outputs["cosmos_endpoint"], "database": outputs["cosmos_database"]},
            "serviceBus": {"namespace": outputs["servicebus_namespace"]},
            "blob": {"accountUrl": outputs["blob_account_url"], "container": outputs["blob_container"]},
            "serviceTokenScope": f"{outputs['api_app_id_uri']}/.default",
        },
        "identities": {name: {"clientId": identities[name]} for name in ("catalog", "execution", "agent", "scaler")},
        "keyVault": {
            "name": outputs["key_vault_name"],
            "secrets": {
                "pageToken": outputs["page_token_secret_name"],
                "appInsightsConnectionString": outputs["appinsights_secret_name"],
            },
        },
        "ingress": {"host": host},
        "networkPolicy": {"ingressFromCidrs": list(outputs["app_gateway_subnet_cidrs"])},
    }


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: maps merge key by key, everything else (lists too) is replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def chart_defaults() -> dict[str, Any]:
    """The chart's values.yaml."""
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    return loaded


def envoy_config(values: Mapping[str, Any], *, release: str, namespace: str) -> str:
    """The gateway's Envoy bootstrap for these values: ``gateway.render --target azure``, descriptor inline,
    upstreams at the chart's Service names."""
    full = deep_merge(chart_defaults(), values)
    name = full.get("fullnameOverride") or release

    def address(component: str, port: int) -> str:
        return f"{name}-{component}.{namespace}.svc.cluster.local:{port}"

    config = render_config(
        "azure",
        tenant_id=full["auth"]["tenantId"],
        client_id=full["auth"]["clientId"],
        app_id_uri=full["auth"]["appIdUri"],
        authority_host=full["auth"]["authorityHost"],
        namespace=namespace,
        listen_port=full["gateway"]["port"],
        catalog_address=address("catalog", full["catalog"]["ports"]["grpc"]),
        execution_address=address("execution", full["execution"]["ports"]["grpc"]),
        objects_address=address("execution", full["execution"]["ports"]["http"]),
        inline_descriptor=True,
    )
    return dump_config(config)


@dataclass(frozen=True)
class Rendered:
    """The files of one rendered deployment."""

    values: Path
    envoy: Path
    manifests: Path
    helm_args: tuple[str, ...]


def helm_args(release: str, namespace: str, values: Path, envoy: Path) -> tuple[str, ...]:
    """The arguments shared by ``helm lint``/``template``/``upgrade`` for these files."""
    return (
        "--namespace",
        namespace,
        "--values",
        str(values),
        "--set-file",
        f"gateway.envoyConfig={envoy}",
    )


def run_helm(*args: str) -> str:
    """Run helm; its stdout, or a RuntimeError with its stderr."""
    result = subprocess.run([str(tools.helm()), *args], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"helm {args[0]} failed:\n{result.stdout.strip()}\n{result.stderr.strip()}".strip())
    return result.stdout


def render(
    outputs: Mapping[str, Any],
    overrides: Sequence[Mapping[str, Any]],
    out: Path,
    *,
    chart: Path = CHART,
) -> Rendered:
    """Write values.yaml, envoy.yaml and manifests.yaml for ``outputs`` + ``overrides`` into ``out``."""
    release = str(outputs["release_name"])
    namespace = str(outputs["namespace"])
    values = values_from_outputs(outputs)
    for override in overrides:
        values = deep_merge(values, override)
    values.get("gateway", {}).pop("envoyConfig", None)  # always the renderer's, passed with --set-file
    out.mkdir(parents=True, exist_ok=True)
    values_file = out / "values.yaml"
    values_file.write_text(
        "# Generated by python -m deploy.render from Terraform outputs and overrides; review, then apply with\n"
        "# the helm upgrade command it printed. Holds no secret (Key Vault object names only).\n"
        + yaml.safe_dump(values, sort_keys=False),
        encoding="utf-8",
    )
    envoy_file = out / "envoy.yaml"
    envoy_file.write_text(envoy_config(values, release=release, namespace=namespace), encoding="utf-8")
    args = helm_args(release, namespace, values_file, envoy_file)
    run_helm("lint", "--strict", str(chart), *args)
    manifests = run_helm("template", release, str(chart), *args)
    manifests_file = out / "manifests.yaml"
    manifests_file.write_text(manifests, encoding="utf-8")
    return Rendered(values_file, envoy_file, manifests_file, args)


def _load_overrides(paths: Sequence[str]) -> list[dict[str, Any]]:
    loaded = []
    for path in paths:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise TypeError(f"{path}: expected a mapping of chart values")
        loaded.append(data)
    return loaded


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m deploy.render", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tf-outputs", type=Path, help="`terraform output -json` of the environment")
    source.add_argument("--example", action="store_true", help="the example environment's outputs")
    parser.add_argument("-f", "--values", action="append", default=[], help="overrides (chart values), in order")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    try:
        outputs = read_outputs(EXAMPLE_OUTPUTS if args.example else args.tf_outputs)
        rendered = render(outputs, _load_overrides(args.values), args.out)
    except (RuntimeError, TypeError, ValueError) as error:
        print(error)
        return 1
    documents = [d for d in yaml.safe_load_all(rendered.manifests.read_text(encoding="utf-8")) if d]
    kinds: dict[str, int] = {}
    for document in documents:
        kinds[document["kind"]] = kinds.get(document["kind"], 0) + 1
    print(f"values:    {rendered.values}")
    print(f"envoy:     {rendered.envoy}")
    print(f"manifests: {rendered.manifests} ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})")
    merged = deep_merge(chart_defaults(), yaml.safe_load(rendered.values.read_text(encoding="utf-8")))
    if not merged["image"]["digest"] or not merged["gateway"]["image"]["digest"]:
        print("warning: an image is pulled by tag; set image.digest and gateway.image.digest for production")
    print("apply (after review):")
    print(
        "  helm upgrade --install",
        outputs["release_name"],
        os.path.relpath(CHART),
        "--atomic --wait --timeout 10m",
        *rendered.helm_args,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
