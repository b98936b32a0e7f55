"""deploy/ansible: the playbook passes `ansible-playbook --syntax-check`, and runs for real with
`--connection=local` against a throwaway root: scripts/install-pi.sh stages its files there
(--destdir, without the venv and the models, which would take minutes and the network), the
role writes the box's config from the inventory (checked by edgeblur's own loader), its token
and camera credentials from the example vault, and restarts nothing. The second run changes
nothing and notifies no restart; a changed inventory setting changes the config and notifies
the restart; a bad setting is refused before the file is touched.

systemd is not driven here (edgeblur_manage_service: false): the throwaway root has no service
manager. The vault is the shipped example, encrypted with its documented test password.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleet_support import DEPLOY, REPO

from edge.configfile import load_config

ANSIBLE = DEPLOY / "ansible"
PLAYBOOK = ANSIBLE / "playbook.yml"
EXAMPLE_VAULT_PASSWORD = "edgeblur-example-vault"
ANSIBLE_PLAYBOOK = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) or (
    shutil.which("ansible-playbook")
)

pytestmark = pytest.mark.skipif(
    ANSIBLE_PLAYBOOK is None, reason="ansible-core is not installed (the test extra has it)"
)


def camera(camera_id: str, segment_s: float = 300) -> dict[str, Any]:
    return {
        "id": camera_id,
        "source": {
            "type": "rtsp",
            "url": "rtsp://${EDGEBLUR_CAM_1_USER}:${EDGEBLUR_CAM_1_PASSWORD}@10.20.0.11/s",
        },
        "recording": {"segment_s": segment_s},
    }


class Playbook:
    """ansible-playbook on localhost, writing everything under tmp_path/root."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.root = tmp_path / "root"
        self.password_file = tmp_path / "vault-password"
        self.password_file.write_text(EXAMPLE_VAULT_PASSWORD + "\n")
        self.inventory = tmp_path / "inventory.yml"
        self.cameras = [camera("gate"), camera("hall")]

    def write_inventory(self) -> None:
        host = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "ansible_become": False,
            "edgeblur_root": str(self.root),
            "edgeblur_fetch_source": False,
            "edgeblur_src_dir": str(REPO),
            "edgeblur_install_command": "{{ edgeblur_src_dir }}/scripts/install-pi.sh "
            "--destdir {{ edgeblur_root }} --no-venv --no-models",
            "edgeblur_manage_service": False,
            "edgeblur_set_owner": False,
            "edgeblur_python": sys.executable,
            "edgeblur_cameras": self.cameras,
        }
        inventory = {"all": {"children": {"edgeblur_boxes": {"hosts": {"testbox": host}}}}}
        self.inventory.write_text(yaml.safe_dump(inventory))

    def run(self, *extra: str) -> subprocess.CompletedProcess[str]:
        self.write_inventory()
        env = {
            **os.environ,
            "ANSIBLE_HOME": str(self.tmp / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(self.tmp / "ansible-tmp"),
            "ANSIBLE_REMOTE_TMP": str(self.tmp / "ansible-remote-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "PYTHONPATH": str(REPO),
            "PYTHONWARNINGS": "ignore",
        }
        assert ANSIBLE_PLAYBOOK is not None
        return subprocess.run(
            [ANSIBLE_PLAYBOOK, "-i", str(self.inventory), str(PLAYBOOK),
             "--vault-password-file", str(self.password_file), *extra],
            capture_output=True, text=True, env=env, cwd=self.tmp, timeout=300,
        )


def recap(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    match = re.search(r"testbox\s*:\s*(.*)", result.stdout.split("PLAY RECAP")[-1])
    assert match, result.stdout + result.stderr
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


def test_syntax_check() -> None:
    assert ANSIBLE_PLAYBOOK is not None
    result = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(ANSIBLE / "inventory.example.yml"), str(PLAYBOOK),
         "--syntax-check"],
        capture_output=True, text=True, timeout=120, cwd=ANSIBLE,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_role_installs_configures_and_is_idempotent(tmp_path: Path) -> None:
    playbook = Playbook(tmp_path)

    first = playbook.run()
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first)["changed"] >= 4  # install, config, token, credentials
    assert "RUNNING HANDLER [edgeblur : Restart edgeblur]" in first.stdout
    config_dir = playbook.root / "etc" / "edgeblur"
    # The installer really ran (staged): its wrapper, unit and data directory are there.
    assert (playbook.root / "usr" / "local" / "bin" / "edgeblur").is_file()
    assert (playbook.root / "etc" / "systemd" / "system" / "edgeblur.service").is_file()
    assert (playbook.root / "var" / "lib" / "edgeblur").is_dir()
    config = load_config(config_dir / "edgeblur.yaml")
    assert [c.id for c in config.cameras] == ["gate", "hall"]
    assert config.storage.data_dir == playbook.root / "var" / "lib" / "edgeblur"
    assert config.storage.max_age_h == 720  # from group_vars
    assert "example-token-0123456789abcdef" in (config_dir / "token.env").read_text()
    credentials = (config_dir / "cameras.env").read_text()
    assert "EDGEBLUR_CAM_1_PASSWORD=example-password-1" in credentials
    for secret in ("token.env", "cameras.env"):
        assert (config_dir / secret).stat().st_mode & 0o077 == 0, secret
    assert "example-password" not in first.stdout  # no_log on the secrets

    second = playbook.run()
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second)["changed"] == 0, second.stdout
    assert "RUNNING HANDLER" not in second.stdout

    playbook.cameras = [camera("gate"), camera("hall", segment_s=120)]
    third = playbook.run()
    assert third.returncode == 0, third.stdout + third.stderr
    assert recap(third)["changed"] == 1
    assert "RUNNING HANDLER [edgeblur : Restart edgeblur]" in third.stdout
    assert load_config(config_dir / "edgeblur.yaml").cameras[1].recording.segment_s == 120

    written = (config_dir / "edgeblur.yaml").read_text()
    playbook.cameras = [{"id": "gate", "source": {"type": "rtsp", "url": "rtsp://x/y"},
                         "fail_policy": "pass_raw"}]
    refused = playbook.run()
    assert refused.returncode != 0
    assert "fail_policy" in refused.stdout + refused.stderr
    assert (config_dir / "edgeblur.yaml").read_text() == written
