"""deploy/kubernetes: every rendered object validates offline against the Kubernetes 1.30 schemas
in strict mode (PyPI kubernetes-validate ships them; unknown fields are errors), the
ServiceMonitor (a CRD, which those schemas do not hold) against a strict schema of the fields the
Prometheus Operator's monitoring.coreos.com/v1 API documents, and the pieces agree with each
other and with edgeblur (ports, probes, config, security).

Rendering: `kubectl kustomize` where it is installed (its output is also compared with the
renderer in kustomize.py), else kustomize.py alone (CI: Debian packages no kustomize).
"""

from __future__ import annotations

import copy
import ipaddress
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from fleet_support import DEPLOY
from kustomize import render

from edge.configfile import parse_config

KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = sorted(p for p in (KUBERNETES / "overlays").iterdir() if p.is_dir())
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]

# The fields of monitoring.coreos.com/v1 ServiceMonitor this repository may use, as the
# Prometheus Operator's API reference defines them; anything else is refused (strict).
_SECRET_KEY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "key"],
    "properties": {"name": {"type": "string"}, "key": {"type": "string"}},
}
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
             r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "namespaceSelector": {"type": "object"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "authorization": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "type": {"type": "string"},
                                    "credentials": _SECRET_KEY,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def rendered(overlay: Path) -> list[dict[str, Any]]:
    return render(overlay)


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [obj for obj in objects if obj["kind"] == kind]
    return found


def schema_errors(obj: dict[str, Any], version: str) -> list[str]:
    """Strict validation errors of one object ([] when valid)."""
    if obj["kind"] == "ServiceMonitor":
        validator = jsonschema.Draft7Validator(SERVICE_MONITOR_SCHEMA)
        return [error.message for error in validator.iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.path))}: {error.message}"]
    return []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_every_object_validates_strictly(overlay: Path, version: str) -> None:
    objects = rendered(overlay)
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy", "PersistentVolume",
            "PersistentVolumeClaim", "ServiceMonitor", "Namespace"} <= kinds
    for obj in objects:
        assert schema_errors(obj, version) == [], f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize(
    ("kind", "mutate"),
    [
        # a misspelt field: strict mode refuses unknown keys
        ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(
            {"readinessProbes": {}})),
        ("Deployment", lambda d: d["spec"].update({"replicas": "one"})),
        ("Service", lambda d: d["spec"]["ports"][0].update({"targetport": 8080})),
        ("NetworkPolicy", lambda d: d["spec"]["egress"][0].update({"ports": [{"port": []}]})),
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update({"intervall": "30s"})),
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update({"interval": "30 sec"})),
    ],
    ids=["misspelt-field", "wrong-type", "service-field", "policy-port", "monitor-field",
         "monitor-duration"],
)
def test_a_wrong_field_fails(kind: str, mutate: Any) -> None:
    broken = copy.deepcopy(by_kind(rendered(OVERLAYS[0]), kind))
    mutate(broken)
    assert schema_errors(broken, "1.30.0") != []


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_kubectl_kustomize_renders_the_same(overlay: Path) -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    hash_suffix = re.compile(r"-[0-9a-z]{10}$")

    def normalised(objects: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
        text = {}
        for obj in objects:
            name = hash_suffix.sub("", obj["metadata"]["name"])
            dumped = yaml.safe_dump(obj, sort_keys=True)
            text[(obj["kind"], name)] = hash_suffix.sub("", dumped.replace(
                obj["metadata"]["name"], name))
        return {key: re.sub(r"(edgeblur-config)-[0-9a-z]{10}", r"\1", value)
                for key, value in text.items()}

    from_kubectl = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert normalised(from_kubectl) == normalised(rendered(overlay))
    for obj in from_kubectl:
        assert schema_errors(obj, "1.30.0") == []


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_the_pieces_fit_together(overlay: Path) -> None:
    objects = rendered(overlay)
    deployment = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    labels = pod["metadata"]["labels"]

    # The config it mounts is a valid edgeblur config writing to the recordings volume.
    config_map = by_kind(objects, "ConfigMap")
    config = parse_config(yaml.safe_load(config_map["data"]["edgeblur.yaml"]), "configmap")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert str(config.storage.data_dir) == mounts["recordings"]
    assert container["args"][container["args"].index("--config") + 1] == (
        f"{mounts['config']}/edgeblur.yaml"
    )
    assert container["args"][container["args"].index("--host") + 1] == "0.0.0.0"
    assert all(c.source.type == "rtsp" for c in config.cameras)

    # Probes, ports and the Service.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": config.service.port, "rtsp": config.service.rtsp.port}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = by_kind(objects, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    assert service["spec"]["publishNotReadyAddresses"] is True  # one pod for all cameras
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    monitor = by_kind(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    secret_name = container["envFrom"][0]["secretRef"]["name"]
    assert monitor["spec"]["endpoints"][0]["authorization"]["credentials"] == {
        "name": secret_name, "key": config.service.token_env}

    # Non-root, read-only, nothing extra.
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    resources = container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}

    # The policy: in only to the Service's ports, out only to the cameras' network and DNS.
    policy = by_kind(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = policy["spec"]["ingress"]
    assert {p["port"] for p in ingress["ports"]} == {p["port"] for p in service["spec"]["ports"]}
    camera_rule, dns_rule = policy["spec"]["egress"]
    cidr = camera_rule["to"][0]["ipBlock"]["cidr"]
    assert cidr != "192.0.2.0/24", "the overlay must set its camera network"
    network = ipaddress.ip_network(cidr)
    for camera in config.cameras:
        host = re.search(r"@([0-9.]+):(\d+)/", str(camera.source.url))  # type: ignore[union-attr]
        assert host, camera.id
        assert ipaddress.ip_address(host.group(1)) in network, camera.id
        assert int(host.group(2)) in {p["port"] for p in camera_rule["ports"]}
    assert {p["port"] for p in dns_rule["ports"]} == {53}

    # The local volume sits on the node the pod is pinned to and is bound to its claim.
    volume = by_kind(objects, "PersistentVolume")
    claim = by_kind(objects, "PersistentVolumeClaim")
    assert volumes["recordings"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert volume["spec"]["claimRef"] == {
        "namespace": claim["metadata"]["namespace"], "name": claim["metadata"]["name"]}
    assert volume["spec"]["storageClassName"] == claim["spec"]["storageClassName"]
    (term,) = volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    (expression,) = term["matchExpressions"]
    assert expression["key"] == "kubernetes.io/hostname"
    assert expression["values"] == [pod["spec"]["nodeSelector"]["kubernetes.io/hostname"]]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
