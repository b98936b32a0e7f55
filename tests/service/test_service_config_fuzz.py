"""A bounded property-based fuzz of PUT /api/config against the real schema and the real app
under uvicorn: the config in force (from GET, secrets masked) with a few of its leaves, or
a camera pointed at a loopback address, replaced by hostile values. Whatever is sent: no 5xx,
no change without its audit line, the file always what runs, and nothing past the privacy
floor or in the file-only sections."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge.config import EdgeblurConfig
from edge.configfile import config_to_dict, load_config
from service.privacy import privacy_settings

FILE_ONLY = ("service.token", "service.token_env", "service.host", "service.audit_log",
             "service.camera_networks", "storage.data_dir", "models.cache_dir", "privacy_floor")

hostile_scalars = st.one_of(
    st.floats(min_value=0.0, max_value=3.0),  # mostly in range: changes that go through
    st.integers(min_value=0, max_value=100),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.booleans(),
    st.none(),
    st.text(alphabet=st.characters(codec=None), max_size=12),  # lone surrogates included
    st.sampled_from(["noise", "solid", "pixelate", "blur", "only", "off", "extra", "yunet",
                     "blazeface", "centerface", "0.0.0.0", "/etc", "${EDGEBLUR_TOKEN}",
                     "rtsp://${EDGEBLUR_TOKEN}@127.0.0.1/x", "http://127.0.0.1:9/${HOME}"]),
)
hostile_values = st.one_of(
    hostile_scalars,
    st.lists(hostile_scalars, max_size=3),
    st.dictionaries(st.sampled_from(["type", "url", "threshold", "x"]), hostile_scalars,
                    max_size=2),
)
loopback_cameras = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["fz1", "fz2", "hall"]),
        "source": st.one_of(
            st.fixed_dictionaries({
                "type": st.just("mjpeg"),
                "url": st.sampled_from(["http://127.0.0.1:9/x", "http://u:p@127.0.0.1:9/x",
                                        "http://${EDGEBLUR_CAM_1_PASSWORD}@127.0.0.1:9/x"]),
            }),
            st.fixed_dictionaries({"type": st.just("demo"), "width": st.integers(100, 400)}),
        ),
        "motion": st.fixed_dictionaries({"mode": st.sampled_from(["off", "only", "extra"]),
                                         "min_area_px": st.integers(1, 10**7)}),
    }
)


def leaf_paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        found = [path] if path else []
        for key, value in node.items():
            found += leaf_paths(value, (*path, key))
        return found
    if isinstance(node, list):
        found = [path]
        for index, value in enumerate(node):
            found += leaf_paths(value, (*path, index))
        return found
    return [path]


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    result = copy.deepcopy(document)
    node = result
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return result


def test_config_api_fuzz(api, config_file):
    start = api.client.get("/api/config").json()
    # The schema's own leaves: every section and field of the config in force, plus
    # the detector fields it leaves at their defaults.
    paths = leaf_paths(start) + [("detector", name) for name in ("min_face_px", "max_face_px",
                                                                  "input_long_side")]

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(
        edits=st.lists(st.tuples(st.sampled_from(paths), hostile_values), min_size=1,
                       max_size=3),
        camera=st.one_of(st.none(), loopback_cameras),
        method=st.sampled_from(["PUT", "PATCH"]),
    )
    @example(edits=[(("tracking", "hold_s"), 2.0)], camera=None, method="PATCH")
    @example(edits=[(("redaction", "method"), "blur")], camera=None, method="PUT")
    def one_change(edits: list[tuple[tuple[Any, ...], Any]], camera: Any, method: str) -> None:
        current = api.client.get("/api/config").json()
        document = current
        for path, value in edits:
            try:
                document = replaced(document, path, value)
            except (KeyError, IndexError, TypeError):
                continue
        if camera is not None and isinstance(document.get("cameras"), list):
            document["cameras"] = [*document["cameras"], camera]
        old = api.control.config()
        audit_before = audit_count(api)
        body = json.dumps(document, allow_nan=True).encode("utf-8", "surrogatepass")
        request = api.client.put if method == "PUT" else api.client.patch
        response = request("/api/config", content=body,
                           headers={"Content-Type": "application/json"})

        assert response.status_code < 500, response.text
        new = api.control.config()
        on_disk = load_config(config_file)
        assert config_to_dict(on_disk) == config_to_dict(new), "the file is not what runs"
        if response.status_code != 200:
            assert new is old
            return
        changed = bool(response.json()["changes"])
        assert audit_count(api) == audit_before + (1 if changed else 0), "unaudited change"
        assert not [s for s in privacy_settings(old, new) if s.violation], "below the floor"
        for change in response.json()["changes"]:
            assert not change["path"].startswith(FILE_ONLY), change

    one_change()
    # It did make changes (the fuzz is not only bouncing off validation).
    assert audit_count(api) > 0


def audit_count(api: Any) -> int:
    path = api.settings.audit_log
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_fuzz_start_config_is_valid(control):
    EdgeblurConfig.model_validate(config_to_dict(control.config()))
