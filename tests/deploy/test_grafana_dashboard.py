"""deploy/grafana/edgeblur.json: Grafana itself is not installable here (no Debian package, and
its own apt repository and container registry are out of reach), so the dashboard's structure is
checked instead: the fields Grafana's dashboard JSON model requires, unique panel ids, panels
inside the 24-column grid without overlapping, the variables the queries use, every query valid
PromQL (`promtool check rules` on the queries as recording rules) naming only metrics edgeblur
exports, the recording rules of deploy/prometheus, or node_exporter's filesystem metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleet_support import DEPLOY, exported_metric_names

DASHBOARD = DEPLOY / "grafana" / "edgeblur.json"
RULES = DEPLOY / "prometheus" / "edgeblur-rules.yaml"
PANEL_TYPES = {"stat", "timeseries", "table", "bargauge", "gauge", "text"}
OTHER_METRICS = {"up", "node_filesystem_avail_bytes", "node_filesystem_size_bytes"}


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def queries() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def test_dashboard_model_fields() -> None:
    board = dashboard()
    for key in ("title", "uid", "schemaVersion", "panels", "templating", "time", "refresh"):
        assert key in board, key
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", board["uid"])
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"

    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        assert panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert panel["targets"] and len(ref_ids) == len(set(ref_ids)), panel["title"]

    used = {name for expr in queries() for name in re.findall(r"\$(\w+)", expr)}
    assert used <= set(variables)


def test_fleet_overview_is_there() -> None:
    titles = " | ".join(panel["title"].lower() for panel in dashboard()["panels"])
    for needed in ("cameras by state", "delivered fps", "withheld", "recording", "disk"):
        assert needed in titles, needed


def test_queries_name_only_known_metrics() -> None:
    exported = exported_metric_names()
    recorded = {
        rule["record"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    for expr in queries():
        without_strings = re.sub(r'"[^"]*"', '""', expr)
        without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
        names = set(re.findall(r"\b(edgeblur[a-z_:0-9]*|up|node_[a-z_]+)\b", without_ranges))
        assert names, expr
        assert names <= exported | recorded | OTHER_METRICS, (expr, names)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_queries_are_valid_promql(tmp_path: Path) -> None:
    # Grafana's variables become what they stand for in a query: a regex for $instance.
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$instance", ".*")}
        for i, expr in enumerate(queries())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
