"""deploy/prometheus: the rules load (`promtool check rules`), their unit tests pass (`promtool
test rules`, Debian's prometheus package), those unit tests catch a broken hold time, every
alert has a unit test, and the rules name only metrics edgeblur really exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from fleet_support import DEPLOY, exported_metric_names

PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "edgeblur-rules.yaml"
RULE_TESTS = PROMETHEUS / "tests" / "edgeblur-rules.test.yaml"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian package prometheus: scripts/install.sh "
    "--test-system)",
)


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def rules() -> list[dict[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@needs_promtool
def test_rules_load() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_unit_tests_catch_a_camera_down_alert_that_fires_too_early(tmp_path: Path) -> None:
    broken = RULES.read_text().replace(
        "expr: edgeblur_camera_up == 0\n        for: 2m", "expr: edgeblur_camera_up == 0\n"
        "        for: 30s"
    )
    assert broken != RULES.read_text()
    (tmp_path / "tests").mkdir()
    (tmp_path / RULES.name).write_text(broken)
    shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
    result = promtool("test", "rules", str(tmp_path / "tests" / RULE_TESTS.name), cwd=tmp_path)
    assert result.returncode != 0
    assert "EdgeblurCameraDown" in result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert alerts == tested


def test_rules_name_only_metrics_edgeblur_exports() -> None:
    exported = exported_metric_names()
    named = {
        name
        for rule in rules()
        for name in re.findall(r"\bedgeblur_[a-z_]+\b", rule["expr"])
    }
    assert named, "no edgeblur metric found in the rules"
    assert named <= exported, sorted(named - exported)
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used = {
        name for rule in rules() for name in re.findall(r"\bedgeblur:[a-z_0-9:]+", rule["expr"])
    }
    assert used <= recorded
