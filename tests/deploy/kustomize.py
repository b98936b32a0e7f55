"""A small renderer for the subset of kustomize that deploy/kubernetes uses, for machines without
`kubectl kustomize` (CI has none; Debian packages no kustomize).

Supported, as kustomize defines them: `resources` (files and folders holding a kustomization),
`namespace`, `configMapGenerator` (files; the name gets a content hash, and the Deployment's
configMap volumes follow the new name), `images` (newName/newTag), `patches` (a file holding a
strategic-merge patch of maps, or an inline JSON 6902 patch with a kind/name target). Anything
else in a kustomization is refused, so a feature added to the manifests cannot be skipped here
without the test saying so. Where kubectl is installed, tests compare this renderer's output
with kubectl's.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "configMapGenerator",
    "images",
    "patches",
}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole",
                  "ClusterRoleBinding", "CustomResourceDefinition"}


class KustomizeError(ValueError):
    pass


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def render(folder: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize folder` would print (up to the generated name's hash)."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise KustomizeError(f"{folder}: kustomization keys not supported here: {sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = folder / entry
        objects.extend(render(path) if path.is_dir() else load_documents(path))

    renamed: dict[str, str] = {}
    for generator in kustomization.get("configMapGenerator", []):
        data = {Path(name).name: (folder / name).read_text() for name in generator["files"]}
        digest = hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:10]
        name = f"{generator['name']}-{digest}"
        renamed[generator["name"]] = name
        objects.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
        )
    for obj in objects:
        for volume in _pod_spec(obj).get("volumes", []):
            config_map = volume.get("configMap")
            if config_map and config_map.get("name") in renamed:
                config_map["name"] = renamed[config_map["name"]]

    namespace = kustomization.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace

    for image in kustomization.get("images", []):
        for obj in objects:
            for container in _pod_spec(obj).get("containers", []):
                name, _, _tag = container["image"].partition(":")
                if name == image["name"]:
                    new_name = image.get("newName", name)
                    container["image"] = f"{new_name}:{image.get('newTag', _tag)}"

    for patch in kustomization.get("patches", []):
        if "path" in patch:
            (overlay,) = load_documents(folder / patch["path"])
            target = _find(objects, overlay["kind"], overlay["metadata"]["name"])
            _merge(target, overlay)
        else:
            target = _find(objects, patch["target"]["kind"], patch["target"]["name"])
            for operation in yaml.safe_load(patch["patch"]):
                _json6902(target, operation)
    return objects


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj.get("kind") in ("Deployment", "DaemonSet", "StatefulSet"):
        spec: dict[str, Any] = obj["spec"]["template"]["spec"]
        return spec
    return {}


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise KustomizeError(f"patch target {kind}/{name} not found")


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Strategic merge of maps; a list in a patch would need its merge key, so it is refused."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        elif isinstance(value, list):
            raise KustomizeError(f"list {key!r} in a strategic-merge patch: not supported here")
        else:
            target[key] = copy.deepcopy(value)


def _json6902(target: dict[str, Any], operation: dict[str, Any]) -> None:
    if operation["op"] != "replace":
        raise KustomizeError(f"JSON patch op {operation['op']!r}: not supported here")
    *parents, last = [part for part in operation["path"].split("/") if part]
    node: Any = target
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if isinstance(node, dict) and key not in node:
        raise KustomizeError(f"JSON patch path {operation['path']} does not exist")
    node[key] = copy.deepcopy(operation["value"])
