"""The Helm chart rendered with the default values and the two example environments: schema, Kubernetes
schemas (kubernetes-validate --strict), checkov, and the properties the deployment relies on."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deploy import render
from gateway.envoy import validate_config
from gateway.render import dump_config, render_config
from tests.deploy.conftest import CHART, K8S_SKIPS, Rendered, run

VARIANTS = ("default", "staging", "production")
SERVICES = ("catalog", "execution", "agent")
#: Kubernetes versions to validate against: the oldest AKS version the chart supports, and the newest known.
K8S_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
CRDS = {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication"),
        ("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass")}  # fmt: skip


def pod_specs(item: Rendered) -> list[tuple[str, dict[str, Any]]]:
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in item.kind("Deployment")]


def container(item: Rendered, deployment: str) -> dict[str, Any]:
    spec = item.one("Deployment", deployment)["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = spec["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(item: Rendered, deployment: str) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(item, deployment)["env"]}


# ---- helm lint / schema ---------------------------------------------------------------------------------


#: values that must be refused by values.schema.json: (override, the schema path the error names)
BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown top-level key": ({"replicaCount": 3}, "at '': additional properties 'replicaCount'"),
    "unknown setting (not in the settings model)": ({"settings": {"backend": "local"}}, "at '/settings'"),
    "image tag latest": ({"image": {"tag": "latest"}}, "at '/image/tag'"),
    "image digest malformed": ({"image": {"digest": "sha256:xyz"}}, "at '/image/digest'"),
    "tenant id not a GUID": ({"auth": {"tenantId": "contoso"}}, "at '/auth/tenantId'"),
    "cosmos endpoint over http": (
        {"azure": {"cosmos": {"endpoint": "http://acct.documents.azure.com/"}}},
        "at '/azure/cosmos/endpoint'",
    ),
    "service bus namespace not fully qualified": (
        {"azure": {"serviceBus": {"namespace": "exthub-sb"}}},
        "at '/azure/serviceBus/namespace'",
    ),
    "a secret value where a Key Vault name belongs": (
        {"keyVault": {"secrets": {"pageToken": "s3cr3t value!"}}},
        "at '/keyVault/secrets/pageToken'",
    ),
    "signing key id malformed": (
        {"keyVault": {"secrets": {"signingKeys": [{"secretName": "k1", "kid": "short"}]}}},
        "at '/keyVault/secrets/signingKeys/0/kid'",
    ),
    "no signing key": ({"keyVault": {"secrets": {"signingKeys": []}}}, "at '/keyVault/secrets/signingKeys'"),
    "log level unknown": ({"settings": {"logLevel": "LOUD"}}, "at '/settings/logLevel'"),
    "agent priorities repeated": (
        {"agent": {"settings": {"agentPriorities": ["HIGH", "HIGH"]}}},
        "at '/agent/settings/agentPriorities'",
    ),
    "resources without limits": ({"catalog": {"resources": {"limits": None}}}, "at '/catalog/resources'"),
    "ingress TLS missing": ({"ingress": {"tls": {"appGatewayCertificate": "", "secretName": ""}}}, "at '/ingress"),
    "KEDA max replicas 0": ({"agent": {"keda": {"maxReplicas": 0}}}, "at '/agent/keda/maxReplicas'"),
    "agents scaled to zero (synchronous executions need one)": (
        {"agent": {"keda": {"minReplicas": 0}}},
        "at '/agent/keda/minReplicas'",
    ),
    "no Application Gateway source range": (
        {"networkPolicy": {"ingressFromCidrs": []}},
        "at '/networkPolicy/ingressFromCidrs'",
    ),
    "egress CIDR malformed": (
        {"networkPolicy": {"extensionEgress": [{"cidr": "everywhere", "ports": [443]}]}},
        "at '/networkPolicy/extensionEgress/0/cidr'",
    ),
    "port out of range": ({"execution": {"ports": {"grpc": 70000}}}, "at '/execution/ports/grpc'"),
    "public URL over http": ({"publicUrl": "http://exthub.example.com"}, "at '/publicUrl'"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(case: str, helm_bin: Path, tmp_path: Path) -> None:
    override, where = BAD_VALUES[case]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(override), encoding="utf-8")
    commands: list[list[str | Path]] = [["lint", "--strict", CHART], ["template", "exthub", CHART]]
    for command in commands:
        result = run([helm_bin, *command, "--values", bad], check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0, f"{case}: helm {command[0]} accepted bad values"
        assert where in output, f"{case}: helm {command[0]} did not name {where!r}:\n{output}"


def test_example_environments_lint_strict(helm_bin: Path, rendered: dict[str, Rendered]) -> None:
    for name in ("staging", "production"):
        item = rendered[name]
        assert item.envoy_file is not None
        values_file = item.manifests_file.parent / "values.yaml"
        run([helm_bin, "lint", "--strict", CHART, "--values", values_file,
             "--set-file", f"gateway.envoyConfig={item.envoy_file}"])  # fmt: skip


# ---- Kubernetes schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_validates_strictly(variant: str, rendered: dict[str, Rendered]) -> None:
    item = rendered[variant]
    checked = 0
    for document in item.documents:
        if (document["apiVersion"], document["kind"]) in CRDS:
            continue  # no schema offline: test_crd_objects checks their fields
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(document, version, strict=True)
        checked += 1
    assert checked >= (18 if variant == "default" else 25)


def test_crd_objects(rendered: dict[str, Rendered]) -> None:
    item = rendered["production"]
    values = item.values
    auth = item.one("TriggerAuthentication", "exthub-agent-servicebus")
    assert auth["spec"] == {
        "podIdentity": {"provider": "azure-workload", "identityId": values["identities"]["scaler"]["clientId"]}
    }
    scaled = item.one("ScaledObject", "exthub-agent")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "exthub-agent"}
    assert spec["minReplicaCount"] == values["agent"]["keda"]["minReplicas"]
    assert spec["maxReplicaCount"] == values["agent"]["keda"]["maxReplicas"]
    assert set(spec) == {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod",
                         "triggers"}  # fmt: skip
    subscriptions = []
    cpu = [t for t in spec["triggers"] if t["type"] == "cpu"]
    assert cpu == [{"type": "cpu", "name": "cpu", "metricType": "Utilization", "metadata": {"value": "65"}}]
    for trigger in spec["triggers"]:
        if trigger is cpu[0]:
            continue
        assert trigger["type"] == "azure-servicebus"
        assert trigger["authenticationRef"] == {"name": "exthub-agent-servicebus"}
        metadata = trigger["metadata"]
        assert set(metadata) == {"namespace", "topicName", "subscriptionName", "messageCount", "activationMessageCount"}
        assert all(isinstance(v, str) for v in metadata.values()), "KEDA metadata values are strings"
        assert metadata["namespace"] == "exthub-example-sb"  # the namespace name, not its FQDN
        assert metadata["topicName"] == "execution-requests"
        subscriptions.append(metadata["subscriptionName"])
    assert subscriptions == ["high", "normal", "low"]
    assert not item.kind("HorizontalPodAutoscaler") or all(
        h["spec"]["scaleTargetRef"]["name"] != "exthub-agent" for h in item.kind("HorizontalPodAutoscaler")
    ), "KEDA owns the agents' HPA"


def _spc_objects(spc: dict[str, Any]) -> list[dict[str, str]]:
    parameters = spc["spec"]["parameters"]
    array = yaml.safe_load(parameters["objects"])["array"]
    return [yaml.safe_load(entry) for entry in array]


def test_secret_provider_classes_use_each_service_identity(rendered: dict[str, Rendered]) -> None:
    item = rendered["production"]
    values = item.values
    secrets = values["keyVault"]["secrets"]
    expected_env = {
        "catalog": {"page-token-secret", "appinsights-connection-string"},
        "execution": {"page-token-secret", "appinsights-connection-string"},
        "agent": {"appinsights-connection-string"},
    }
    for service in SERVICES:
        spc = item.one("SecretProviderClass", f"exthub-{service}-keyvault")
        parameters = spc["spec"]["parameters"]
        assert spc["spec"]["provider"] == "azure"
        assert parameters["usePodIdentity"] == "false"
        assert parameters["clientID"] == values["identities"][service]["clientId"]
        assert parameters["keyvaultName"] == values["keyVault"]["name"]
        assert parameters["tenantId"] == values["auth"]["tenantId"]
        objects = _spc_objects(spc)
        assert {o["objectAlias"] for o in objects} == expected_env[service]
        assert all(o["objectType"] == "secret" for o in objects)
        names = {o["objectAlias"]: o["objectName"] for o in objects}
        assert names["appinsights-connection-string"] == secrets["appInsightsConnectionString"]
        synced = spc["spec"]["secretObjects"]
        assert len(synced) == 1 and synced[0]["secretName"] == f"exthub-{service}-keyvault"
        assert {d["key"] for d in synced[0]["data"]} == expected_env[service]
        # the env vars read exactly the synced keys, and the pod mounts the class (the sync needs the mount)
        refs = {
            e["valueFrom"]["secretKeyRef"]["key"]
            for e in container(item, f"exthub-{service}")["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert refs == expected_env[service]
        volumes = item.one("Deployment", f"exthub-{service}")["spec"]["template"]["spec"]["volumes"]
        csi = {v["csi"]["volumeAttributes"]["secretProviderClass"] for v in volumes if "csi" in v}
        assert f"exthub-{service}-keyvault" in csi
    signing = item.one("SecretProviderClass", "exthub-execution-signing")
    aliases = {o["objectAlias"]: o["objectName"] for o in _spc_objects(signing)}
    expected = {"keyring.json": secrets["signingKeyring"]} | {
        f"{k['kid']}.pem": k["secretName"] for k in secrets["signingKeys"]
    }
    assert aliases == expected
    assert signing["spec"]["parameters"]["clientID"] == values["identities"]["execution"]["clientId"]
    assert "secretObjects" not in signing["spec"], "private keys are mounted as files only, never synced to a Secret"
    env = env_of(item, "exthub-execution")
    mounts = {m["name"]: m for m in container(item, "exthub-execution")["volumeMounts"]}
    assert mounts["signing"]["mountPath"] == env["EXTHUB_SIGNING_DIR"] and mounts["signing"]["readOnly"] is True


# ---- what every workload must have ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_is_probed_bounded_and_unprivileged(variant: str, rendered: dict[str, Rendered]) -> None:
    item = rendered[variant]
    assert pod_specs(item)
    for name, spec in pod_specs(item):
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] >= 10000, name
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["topologySpreadConstraints"], name
        for c in spec["containers"] + spec.get("initContainers", []):
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in c, f"{name}/{c['name']}: no {probe}"
            resources = c["resources"]
            for kind in ("requests", "limits"):
                assert set(resources[kind]) >= {"cpu", "memory"}, f"{name}/{c['name']}: {kind}"
            security = c["securityContext"]
            assert security["runAsNonRoot"] is True and security["runAsUser"] >= 10000, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["privileged"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
            # a read-only root: everything written goes to an emptyDir (or a read-only secret mount)
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            assert "/tmp" in mounts, name
            volumes = {v["name"]: v for v in spec["volumes"]}
            for mount in mounts.values():
                volume = volumes[mount["name"]]
                assert "emptyDir" in volume or mount.get("readOnly") is True, f"{name}: {mount['mountPath']}"


def test_python_services_use_native_grpc_probes(rendered: dict[str, Rendered]) -> None:
    item = rendered["production"]
    services = {"catalog": "CatalogService", "execution": "ExecutionService", "agent": "AgentService"}
    for service, grpc_service in services.items():
        c = container(item, f"exthub-{service}")
        port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == port, (service, probe)
        assert c["readinessProbe"]["grpc"]["service"] == f"exthub.{service}.v1.{grpc_service}"
    gateway = container(item, "exthub-gateway")
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_deployment_has_a_pdb_and_is_autoscaled(variant: str, rendered: dict[str, Rendered]) -> None:
    item = rendered[variant]
    pdbs = item.kind("PodDisruptionBudget")
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in item.kind("HorizontalPodAutoscaler")}
    scaled = {s["spec"]["scaleTargetRef"]["name"] for s in item.kind("ScaledObject")}
    for deployment in item.kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        covering = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, f"{deployment['metadata']['name']}: {len(covering)} PDBs"
        name = deployment["metadata"]["name"]
        autoscaled = item.values[name.removeprefix("exthub-")].get("autoscaling", {}).get("enabled")
        if name == "exthub-agent":
            assert name in scaled and name not in hpas
        elif autoscaled:
            assert hpas[name]["apiVersion"] == "autoscaling/v2"
            assert "replicas" not in deployment["spec"], "the HPA owns replicas"
        else:
            assert deployment["spec"]["replicas"] >= 1


def test_each_service_has_its_own_workload_identity(rendered: dict[str, Rendered]) -> None:
    item = rendered["production"]
    client_ids = set()
    for service in SERVICES:
        account = item.one("ServiceAccount", f"exthub-{service}")
        client_id = account["metadata"]["annotations"]["azure.workload.identity/client-id"]
        assert client_id == item.values["identities"][service]["clientId"]
        client_ids.add(client_id)
        pod = item.one("Deployment", f"exthub-{service}")["spec"]["template"]
        assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
        assert pod["spec"]["serviceAccountName"] == f"exthub-{service}"
        assert env_of(item, f"exthub-{service}")["EXTHUB_AZURE__CLIENT_ID"] == client_id
    assert len(client_ids) == 3
    gateway = item.one("ServiceAccount", "exthub-gateway")
    assert "annotations" not in gateway["metadata"], "the gateway needs no Azure identity"


def test_services_reach_each_other_by_the_chart_service_names(rendered: dict[str, Rendered]) -> None:
    item = rendered["production"]
    services = {s["metadata"]["name"]: {p["name"]: p["port"] for p in s["spec"]["ports"]} for s in item.kind("Service")}
    host = "{}.exthub.svc.cluster.local:{}".format
    execution = env_of(item, "exthub-execution")
    assert execution["EXTHUB_CATALOG_ADDRESS"] == host("exthub-catalog", services["exthub-catalog"]["grpc"])
    assert execution["EXTHUB_AGENT_ADDRESS"] == host("exthub-agent", services["exthub-agent"]["grpc"])
    agent = env_of(item, "exthub-agent")
    assert agent["EXTHUB_EXECUTION_ADDRESS"] == host("exthub-execution", services["exthub-execution"]["grpc"])
    assert agent["EXTHUB_AGENT_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}, "one id per agent pod"
    # the gateway's upstreams are the same Services
    config = yaml.safe_load(item.one("ConfigMap", "exthub-gateway")["data"]["envoy.yaml"])
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for cluster, (service, port) in {
        "catalog": ("exthub-catalog", "grpc"),
        "execution": ("exthub-execution", "grpc"),
        "objects": ("exthub-execution", "http"),
    }.items():
        endpoint = clusters[cluster]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        address = endpoint["address"]["socket_address"]
        assert f"{address['address']}:{address['port_value']}" == host(service, services[service][port])


def test_metrics_ports_are_annotated_for_prometheus(rendered: dict[str, Rendered]) -> None:
    item = rendered["production"]
    port_settings = {
        "catalog": "EXTHUB_CATALOG_HTTP_PORT",
        "execution": "EXTHUB_OBJECTS_PORT",
        "agent": "EXTHUB_AGENT_HTTP_PORT",
    }
    for service, variable in port_settings.items():
        pod = item.one("Deployment", f"exthub-{service}")["spec"]["template"]
        http = next(p["containerPort"] for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "http")
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(http) == env_of(item, f"exthub-{service}")[variable]
        assert annotations["prometheus.io/path"] == "/metrics"


def test_otlp_settings_come_from_values(rendered: dict[str, Rendered]) -> None:
    production = env_of(rendered["production"], "exthub-agent")
    assert production["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc.cluster.local:4317"
    assert production["OTEL_SERVICE_NAME"] == "exthub-agent"
    assert "deployment.environment=production" in production["OTEL_RESOURCE_ATTRIBUTES"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_of(rendered["staging"], "exthub-agent")


def test_images_by_digest_when_given(helm_bin: Path, rendered: dict[str, Rendered]) -> None:
    item = rendered["production"]
    assert item.envoy_file is not None
    digest = "sha256:" + "ab" * 32
    manifests = run([
        helm_bin, "template", "exthub", CHART, "--values", item.manifests_file.parent / "values.yaml",
        "--set-file", f"gateway.envoyConfig={item.envoy_file}",
        "--set", f"image.digest={digest}", "--set", f"gateway.image.digest={digest}",
    ]).stdout  # fmt: skip
    images = [
        c["image"] for d in yaml.safe_load_all(manifests) if d and d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    ]  # fmt: skip
    assert len(images) == 4 and all(image.endswith("@" + digest) for image in images), images


# ---- the gateway ----------------------------------------------------------------------------------------


def test_gateway_config_is_the_renderer_output(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    for name in ("staging", "production"):
        item = rendered[name]
        values = item.values
        configmap = item.one("ConfigMap", "exthub-gateway")
        expected = dump_config(
            render_config(
                "azure",
                tenant_id=values["auth"]["tenantId"],
                client_id=values["auth"]["clientId"],
                app_id_uri=values["auth"]["appIdUri"],
                namespace="exthub",
                listen_port=values["gateway"]["port"],
                catalog_address="exthub-catalog.exthub.svc.cluster.local:50051",
                execution_address="exthub-execution.exthub.svc.cluster.local:50052",
                objects_address="exthub-execution.exthub.svc.cluster.local:50054",
                inline_descriptor=True,
            )
        )
        assert configmap["data"] == {"envoy.yaml": expected}
        pod = item.one("Deployment", "exthub-gateway")["spec"]["template"]
        checksum = hashlib.sha256(expected.encode()).hexdigest()
        assert pod["metadata"]["annotations"]["checksum/envoy-config"] == checksum
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["config"]["configMap"]["name"] == "exthub-gateway"
        args = pod["spec"]["containers"][0]["args"]
        assert args[args.index("--config-path") + 1] == "/etc/envoy/envoy.yaml"
    config_file = tmp_path / "envoy.yaml"
    config_file.write_text(rendered["production"].one("ConfigMap", "exthub-gateway")["data"]["envoy.yaml"])
    validate_config(config_file)  # the real Envoy 1.40 accepts it (descriptor inline)


def test_a_contract_change_rolls_the_gateway(example_outputs: dict[str, Any], tmp_path: Path) -> None:
    """Another descriptor set gives another ConfigMap and checksum, so the gateway pods are replaced."""
    first = render.envoy_config(render.values_from_outputs(example_outputs), release="exthub", namespace="exthub")
    changed = render.values_from_outputs(example_outputs)
    changed["auth"]["appIdUri"] = "api://exthub-next"
    second = render.envoy_config(changed, release="exthub", namespace="exthub")
    assert first != second
    assert hashlib.sha256(first.encode()).digest() != hashlib.sha256(second.encode()).digest()


def test_default_values_render_no_gateway_and_say_so(rendered: dict[str, Rendered], helm_bin: Path) -> None:
    item = rendered["default"]
    names = {d["metadata"]["name"] for d in item.documents}
    assert not {n for n in names if n.startswith("exthub-gateway")}
    assert not item.kind("Ingress")
    notes = run([helm_bin, "install", "exthub", CHART, "--dry-run=client", "--namespace", "exthub"]).stdout
    assert "WARNING: no gateway" in notes


def test_ingress_for_application_gateway(rendered: dict[str, Rendered]) -> None:
    item = rendered["production"]
    ingress = item.one("Ingress", "exthub-gateway")
    annotations = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "azure-application-gateway"
    assert annotations["appgw.ingress.kubernetes.io/backend-protocol"] == "http"
    assert annotations["appgw.ingress.kubernetes.io/ssl-redirect"] == "true"
    assert annotations["appgw.ingress.kubernetes.io/appgw-ssl-certificate"] == "exthub-prod-tls"
    assert annotations["appgw.ingress.kubernetes.io/health-probe-path"] == "/healthz"
    assert annotations["appgw.ingress.kubernetes.io/waf-policy-for-path"].startswith("/subscriptions/")
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "exthub.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "exthub-gateway", "port": {"name": "http"}}
    internal = item.one("Service", "exthub-gateway-internal")
    assert internal["spec"]["type"] == "LoadBalancer"
    assert internal["metadata"]["annotations"]["service.beta.kubernetes.io/azure-load-balancer-internal"] == "true"


# ---- network policies ----------------------------------------------------------------------------------


def _selects(policy: dict[str, Any], component: str) -> bool:
    labels = policy["spec"]["podSelector"].get("matchLabels", {})
    return bool(labels.get("app.kubernetes.io/component") == component)


def _peers(rules: list[dict[str, Any]], key: str) -> set[tuple[str, int]]:
    """(peer, port) pairs: peer is a component, "cidr:<x>", "ns:<name>" or "dns"."""
    pairs: set[tuple[str, int]] = set()
    for rule in rules:
        ports = [p["port"] for p in rule.get("ports", [])]
        for peer in rule[key]:
            if "ipBlock" in peer:
                name = "cidr:" + peer["ipBlock"]["cidr"]
            elif "namespaceSelector" in peer and "podSelector" in peer:
                name = "dns"
            elif "namespaceSelector" in peer:
                name = "ns:" + peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            else:
                name = peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            pairs.update((name, port) for port in ports)
    return pairs


def test_network_policies_allow_only_the_documented_paths(rendered: dict[str, Rendered]) -> None:
    item = rendered["production"]
    policies = item.kind("NetworkPolicy")
    deny = item.one("NetworkPolicy", "exthub-default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    assert deny["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "exthub",
        "app.kubernetes.io/instance": "exthub",
    }
    by_component = {c: [p for p in policies if _selects(p, c)] for c in (*SERVICES, "gateway")}
    assert all(len(v) == 1 for v in by_component.values())
    ingress = {c: _peers(v[0]["spec"].get("ingress", []), "from") for c, v in by_component.items()}
    egress = {c: _peers(v[0]["spec"].get("egress", []), "to") for c, v in by_component.items()}
    metrics = {("ns:kube-system", p) for p in (50055, 50054, 50056)}
    assert ingress["gateway"] == {("cidr:10.225.0.0/24", 8080), ("cidr:10.20.0.0/16", 8080)}
    assert ingress["catalog"] == {("gateway", 50051), ("execution", 50051)} | (metrics & {("ns:kube-system", 50055)})
    assert ingress["execution"] == {("gateway", 50052), ("gateway", 50054), ("agent", 50052), ("ns:kube-system", 50054)}
    assert ingress["agent"] == {("execution", 50053), ("ns:kube-system", 50056)}
    internal = {(peer, port) for peer, port in egress["execution"] if not peer.startswith(("cidr:", "dns"))}
    assert internal == {("catalog", 50051), ("agent", 50053)}
    assert {p for p in egress["agent"] if not p[0].startswith(("cidr:", "dns"))} == {("execution", 50052)}
    assert {p for p in egress["catalog"] if not p[0].startswith(("cidr:", "dns"))} == set()
    for component in SERVICES:
        assert ("dns", 53) in egress[component]
        assert {("cidr:0.0.0.0/0", 443), ("cidr:0.0.0.0/0", 5671)} <= egress[component]
    # only the agents reach the extensions (the private partner range on 8443)
    assert ("cidr:10.40.0.0/16", 8443) in egress["agent"]
    assert all(("cidr:10.40.0.0/16", 8443) not in egress[c] for c in ("catalog", "execution", "gateway"))


# ---- settings: every setting that matters on Azure has a value path ---------------------------------------


def test_checkov_kubernetes_has_no_failed_check(checkov_kubernetes: dict[str, Any]) -> None:
    failed = [(c["check_id"], c["resource"]) for c in checkov_kubernetes["results"]["failed_checks"]]
    assert checkov_kubernetes["summary"]["failed"] == 0, failed
    assert checkov_kubernetes["summary"]["passed"] >= 300
    ran = {c["check_id"] for c in checkov_kubernetes["results"]["passed_checks"]}
    assert not ran & set(K8S_SKIPS)
    assert {"CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_28", "CKV_K8S_37", "CKV_K8S_40"} <= ran


def test_no_secret_in_values_or_manifests(rendered: dict[str, Rendered]) -> None:
    for item in rendered.values():
        assert not item.kind("Secret"), "no Secret is rendered: Key Vault objects reach pods via the CSI driver"
        for _, spec in pod_specs(item):
            for c in spec["containers"]:
                for env in c.get("env", []):
                    sensitive = any(w in env["name"] for w in ("SECRET", "PASSWORD", "CONNECTION_STRING", "_KEY"))
                    if sensitive:
                        assert "value" not in env, f"{env['name']} has a literal value"
        text = item.manifests_file.read_text(encoding="utf-8")
        for marker in ("AccountKey=", "SharedAccessKey", "InstrumentationKey=", "BEGIN PRIVATE KEY"):
            assert marker not in text


def test_release_fits_in_a_helm_release_secret(rendered: dict[str, Rendered]) -> None:
    """Helm keeps a release (chart, values, manifest) gzip'd in a Secret of at most 1 MiB; the inline
    descriptor set is the bulk, in the values and the manifest."""
    item = rendered["production"]
    assert item.envoy_file is not None
    payload = item.manifests_file.read_bytes() + item.envoy_file.read_bytes()
    encoded = len(gzip.compress(payload)) * 4 / 3  # base64 in the Secret
    assert encoded < 700 * 1024, f"{encoded / 1024:.0f} KiB"


def test_values_file_from_render_has_no_envoy_config(rendered: dict[str, Rendered]) -> None:
    values = yaml.safe_load((rendered["production"].manifests_file.parent / "values.yaml").read_text())
    assert "envoyConfig" not in values.get("gateway", {})


def test_chart_templates_do_not_use_lookup() -> None:
    """Rendering offline must equal what the cluster gets (lookup would differ)."""
    for template in (CHART / "templates").iterdir():
        assert "lookup" not in template.read_text(encoding="utf-8"), template.name


def test_helm_template_is_deterministic(helm_bin: Path, rendered: dict[str, Rendered]) -> None:
    item = rendered["staging"]
    again = subprocess.run(
        [str(helm_bin), "template", "exthub", str(CHART), "--namespace", "exthub",
         "--values", str(item.manifests_file.parent / "values.yaml"),
         "--set-file", f"gateway.envoyConfig={item.envoy_file}"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert again == item.manifests_file.read_text(encoding="utf-8")
