"""Deployment files: both Dockerfiles, the install scripts and the systemd unit.

No image is built here (no Docker daemon in CI, and the bases come from registries CI cannot
reach): the Dockerfiles are parsed and checked against the repository, the scripts run in
their dry-run and staged (DESTDIR) modes, and the unit goes through `systemd-analyze verify`
where it is installed.
"""

from __future__ import annotations

import fnmatch
import io
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from edge.configfile import load_config

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ["Dockerfile", "Dockerfile.jetson"]
SCRIPTS = ["scripts/install.sh", "scripts/install-pi.sh"]
UNIT = REPO / "deploy" / "edgeblur.service"


def _parse(name: str) -> DockerfileParser:
    # fileobj: given a path, the parser takes any name but "Dockerfile" for a directory.
    return DockerfileParser(fileobj=io.BytesIO((REPO / name).read_bytes()))


def _instructions(name: str) -> list[dict[str, str]]:
    return [i for i in _parse(name).structure if i["instruction"] != "COMMENT"]


def _final_stage(name: str) -> list[dict[str, str]]:
    instructions = _instructions(name)
    last_from = max(i for i, item in enumerate(instructions) if item["instruction"] == "FROM")
    return instructions[last_from:]


def _copy_sources(value: str) -> list[str] | None:
    """Sources of a COPY/ADD from the build context; None for one that copies from a stage."""
    words = json_or_shell_words(value)
    if any(word.startswith("--from=") for word in words):
        return None
    return [word for word in words if not word.startswith("--")][:-1]


def json_or_shell_words(value: str) -> list[str]:
    if value.lstrip().startswith("["):
        import json

        return list(json.loads(value))
    return shlex.split(value)


def _dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            return True
        if pattern.startswith("**/") and any(fnmatch.fnmatch(part, bare) for part in parts):
            return True
    return False


@pytest.mark.parametrize(
    ("path", "ignored"),
    [("edge", False), ("scripts/install.sh", False), (".venv", True), ("edge/__pycache__", True)],
)
def test_dockerignore_matching(path: str, ignored: bool) -> None:
    assert _ignored(path, _dockerignore_patterns()) is ignored


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copied_path_exists_and_is_in_the_build_context(name: str) -> None:
    patterns = _dockerignore_patterns()
    copied = []
    for item in _instructions(name):
        if item["instruction"] not in ("COPY", "ADD"):
            continue
        sources = _copy_sources(item["value"])
        for source in sources or []:
            copied.append(source)
            assert (REPO / source).exists(), f"{name}: COPY {source}: no such path in the repo"
            assert not _ignored(source, patterns), f"{name}: COPY {source} is in .dockerignore"
    assert "scripts/install.sh" in copied


def _make_plan(target: str) -> list[str]:
    """The commands `make TARGET` would run from scratch (-B: as if nothing were built)."""
    result = subprocess.run(
        ["make", "-n", "-B", "-C", str(REPO), target], capture_output=True, text=True, check=True
    )
    return [line for line in result.stdout.splitlines() if not line.startswith("make")]


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
@pytest.mark.parametrize(
    ("target", "system"),
    [("run", "--system"), ("test", "--system --test-system")],
)
def test_make_installs_system_packages_then_the_venv(target: str, system: str) -> None:
    """The README's two commands set up a fresh machine themselves, apt packages first."""
    plan = _make_plan(target)
    assert plan[0] == f"scripts/install.sh {system}"
    assert plan[1] == "scripts/install.sh --venv .venv --extras test --editable"


def test_ci_runs_the_readme_command_and_the_fresh_machine_checks() -> None:
    ci = (REPO / ".ci/run").read_text()
    assert "make test" in ci
    assert "make fresh-test" in ci and "make image-test" in ci


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_install_with_the_shared_script_and_bake_in_models(name: str) -> None:
    runs = " ".join(i["value"] for i in _instructions(name) if i["instruction"] == "RUN")
    assert "install.sh --system" in runs
    assert re.search(r"install\.sh --venv /opt/edgeblur/venv\b", runs)
    assert "--models --model-dir /opt/edgeblur/models" in runs
    env = " ".join(i["value"] for i in _final_stage(name) if i["instruction"] == "ENV")
    assert "EDGEBLUR_MODEL_DIR=/opt/edgeblur/models" in env


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_run_as_a_non_root_user(name: str) -> None:
    users = [i["value"].strip() for i in _final_stage(name) if i["instruction"] == "USER"]
    assert users, f"{name}: no USER in the final stage, the service would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    runs = " ".join(i["value"] for i in _final_stage(name) if i["instruction"] == "RUN")
    assert "useradd --system --uid 10001 --user-group --groups video" in runs
    assert users[-1] == "edgeblur"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_check_health_and_serve_on_all_interfaces(name: str) -> None:
    final = _final_stage(name)
    health = [i["value"] for i in final if i["instruction"] == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0]
    assert "curl" not in health[0], "the slim images have no curl"
    (cmd,) = [json_or_shell_words(i["value"]) for i in final if i["instruction"] == "CMD"]
    assert cmd[:2] == ["edgeblur", "serve"]
    assert cmd[cmd.index("--config") + 1] == "/config/edgeblur.yaml"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    port = cmd[cmd.index("--port") + 1]
    assert f":{port}/healthz" in health[0]
    assert any(
        i["instruction"] == "EXPOSE" and i["value"].split() == [port, "8554"] for i in final
    ), "the API and the RTSP stream ports"
    assert any(i["instruction"] == "VOLUME" and "/data" in i["value"] for i in final)


def test_main_image_is_multi_stage_on_slim_bookworm() -> None:
    assert _parse("Dockerfile").is_multistage
    args = [i["value"] for i in _instructions("Dockerfile") if i["instruction"] == "ARG"]
    assert "PYTHON_IMAGE=python:3.11-slim-bookworm" in args


def test_jetson_image_builds_on_jetpack_6() -> None:
    args = [i["value"] for i in _instructions("Dockerfile.jetson") if i["instruction"] == "ARG"]
    assert any(re.fullmatch(r"L4T_IMAGE=nvcr\.io/nvidia/l4t-jetpack:r36\.[\d.]+", a) for a in args)
    assert any(a.startswith("ONNXRUNTIME_INDEX=") for a in args)


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse_and_explain_themselves(script: str) -> None:
    path = REPO / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    subprocess.run(["bash", "-n", str(path)], check=True)
    shown = subprocess.run([str(path), "--help"], capture_output=True, text=True, check=True)
    assert "usage:" in shown.stdout
    refused = subprocess.run([str(path), "--no-such-option"], capture_output=True, text=True)
    assert refused.returncode == 2 and "unknown option --no-such-option" in refused.stderr


def test_install_dry_run_prints_the_steps_and_touches_nothing(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    result = subprocess.run(
        [
            str(REPO / "scripts/install.sh"),
            "--venv", str(venv),
            "--extras", "test",
            "--editable",
            "--models",
            "--model-dir", str(tmp_path / "models"),
            "--model", "centerface",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    commands = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    pip = f"{venv}/bin/python -m pip install --quiet"
    assert commands[:2] == [
        f"python3 -m venv {venv}",
        f"{venv}/bin/python -m pip install --quiet --upgrade pip",
    ]
    # Resolve everything, install it minus the GUI OpenCV builds, then the checkout itself.
    assert commands[2].startswith(f"{pip} --dry-run --report ")
    assert commands[2].endswith(f" -e {REPO}[test]")
    assert commands[3].startswith("keep the resolved set minus opencv-python opencv-contrib-python")
    assert commands[4].startswith(f"{pip} --no-deps -r ")
    assert commands[5:] == [
        f"{pip} --no-deps -e {REPO}[test]",
        f"{venv}/bin/edgeblur models fetch --cache-dir {tmp_path}/models centerface",
    ]
    assert not venv.exists()


def test_core_install_is_headless() -> None:
    """A server has no X11: the core depends on a headless OpenCV build, and the installer
    leaves out every other cv2 wheel (mediapipe asks for the GUI one)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    opencv = [d for d in project["dependencies"] if d.startswith("opencv")]
    assert opencv == ["opencv-contrib-python-headless>=4.10"]
    script = (REPO / "scripts/install.sh").read_text()
    excluded = re.search(r'OTHER_OPENCV_WHEELS="([^"]+)"', script)
    assert excluded is not None
    assert set(excluded.group(1).split()) == {
        "opencv-python",
        "opencv-contrib-python",
        "opencv-python-headless",
    }


def test_this_environment_has_one_headless_cv2() -> None:
    """What install.sh left here: exactly one distribution owns cv2, and it is the headless one
    (a second one would overwrite cv2 with files that need libxcb)."""
    import importlib.metadata as metadata

    owners = sorted(
        {
            d.metadata["Name"]
            for d in metadata.distributions()
            if any(str(f) == "cv2/__init__.py" for f in (d.files or []))
        }
    )
    assert owners == ["opencv-contrib-python-headless"]


def _fake_dpkg_query(bin_dir: Path) -> None:
    """A PATH holding only what install.sh's apt step uses, where dpkg-query reports every
    package as missing and apt-get and sudo do not exist."""
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "mktemp", "rm", "id", "cat", "grep", "python3"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    fake = bin_dir / "dpkg-query"
    fake.write_text("#!/bin/bash\necho 'unknown ok not-installed'\n")
    fake.chmod(0o755)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root")
def test_install_without_root_or_sudo_prints_the_command_to_run() -> None:
    """No root and no sudo: fail at once with the exact command, never a traceback."""
    # pytest's tmp_path lies under a directory only root may enter.
    home = Path(tempfile.mkdtemp(prefix="edgeblur-nobody-"))
    home.chmod(0o755)
    bin_dir = home / "bin"
    _fake_dpkg_query(bin_dir)
    apt_get = bin_dir / "apt-get"  # there, but it must not be reached
    apt_get.write_text("#!/bin/bash\nexit 99\n")
    apt_get.chmod(0o755)
    try:
        result = subprocess.run(
            [shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups",
             str(REPO / "scripts/install.sh"), "--system"],
            env={"PATH": str(bin_dir), "HOME": str(home), "TMPDIR": "/tmp"},
            capture_output=True,
            text=True,
        )  # fmt: skip
    finally:
        shutil.rmtree(home)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "needs root, and sudo is not installed" in result.stderr
    assert (
        "su -c 'apt-get update && apt-get install -y --no-install-recommends "
        "ca-certificates libegl1 libgles2" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_install_without_apt_names_the_packages(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _fake_dpkg_query(bin_dir)
    result = subprocess.run(
        [str(REPO / "scripts/install.sh"), "--system"],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path), "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "has no apt-get" in result.stderr
    assert "ca-certificates libegl1 libgles2" in result.stderr


def test_install_with_nothing_to_do_says_so() -> None:
    result = subprocess.run([str(REPO / "scripts/install.sh")], capture_output=True, text=True)
    assert result.returncode == 2 and "nothing to do" in result.stderr


def _install_pi(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts/install-pi.sh"), "--no-venv"],
        env={**os.environ, "DESTDIR": str(root)},
        capture_output=True,
        text=True,
        check=True,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_pi_install_lays_out_the_files(tmp_path: Path) -> None:
    result = _install_pi(tmp_path)
    assert "skipped systemctl" in result.stdout
    config = tmp_path / "etc/edgeblur/edgeblur.yaml"
    assert config.read_text() == (REPO / "configs/event-pi.yaml").read_text()
    assert _mode(config) == 0o640
    assert _mode(tmp_path / "etc/edgeblur") == 0o1770  # sticky: the service replaces only its own
    unit = tmp_path / "etc/systemd/system/edgeblur.service"
    assert unit.read_text() == UNIT.read_text()
    assert _mode(tmp_path / "var/lib/edgeblur") == 0o750
    token = tmp_path / "etc/edgeblur/token.env"
    assert _mode(token) == 0o600
    assert re.fullmatch(r"EDGEBLUR_TOKEN=[0-9a-f]{48}\n", token.read_text())
    wrapper = tmp_path / "usr/local/bin/edgeblur"
    assert os.access(wrapper, os.X_OK)
    subprocess.run(["sh", "-n", str(wrapper)], check=True)
    assert "exec /opt/edgeblur/venv/bin/edgeblur" in wrapper.read_text()
    assert "EDGEBLUR_MODEL_DIR" in wrapper.read_text()


def test_pi_install_again_keeps_the_config_and_the_token(tmp_path: Path) -> None:
    _install_pi(tmp_path)
    config = tmp_path / "etc/edgeblur/edgeblur.yaml"
    token = tmp_path / "etc/edgeblur/token.env"
    config.write_text("# edited by the venue technician\n")
    first_token = token.read_text()
    result = _install_pi(tmp_path)
    assert config.read_text() == "# edited by the venue technician\n"
    assert token.read_text() == first_token
    assert "keeping the existing" in result.stdout


def test_pi_tokens_differ_between_installs(tmp_path: Path) -> None:
    _install_pi(tmp_path / "a")
    _install_pi(tmp_path / "b")
    first = (tmp_path / "a/etc/edgeblur/token.env").read_text()
    assert first != (tmp_path / "b/etc/edgeblur/token.env").read_text()


def _unit_entries() -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; keys such as EnvironmentFile may repeat."""
    entries, section = [], ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def _unit_value(key: str) -> str:
    values = [value for section, name, value in _unit_entries() if name == key]
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def test_unit_runs_the_service_hardened() -> None:
    assert _unit_value("User") == "edgeblur"
    assert _unit_value("NoNewPrivileges") == "yes"
    assert _unit_value("ProtectSystem") == "strict"
    assert _unit_value("Restart") == "on-failure"
    assert _unit_value("CapabilityBoundingSet") == ""
    assert _unit_value("LimitCORE") == "0"  # raw frames in memory never reach a core file
    assert "video" in _unit_value("SupplementaryGroups").split()
    assert "/var/lib/edgeblur" in _unit_value("ReadWritePaths").split()
    environment_files = [v for _, k, v in _unit_entries() if k == "EnvironmentFile"]
    assert "/etc/edgeblur/token.env" in environment_files


def test_unit_paths_agree_with_the_pi_config() -> None:
    """The Pi config's data and the config file itself are writable under ProtectSystem=strict,
    and the unit starts the program where install-pi.sh puts it."""
    writable = [Path(p) for p in _unit_value("ReadWritePaths").split()]
    exec_start = shlex.split(_unit_value("ExecStart"))
    assert exec_start[0] == "/opt/edgeblur/venv/bin/edgeblur"
    config_path = Path(exec_start[exec_start.index("--config") + 1])
    assert config_path == Path("/etc/edgeblur/edgeblur.yaml")
    data_dir = load_config(REPO / "configs/event-pi.yaml").storage.data_dir
    for needed in (data_dir, config_path.parent):
        assert any(needed == w or w in needed.parents for w in writable), needed
    assert _unit_value("WorkingDirectory") == str(data_dir)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` checks every key and value; it needs ExecStart to exist, so the
    copy points it at a stand-in. It exits 0 even on unknown keys, so any output fails."""
    program = tmp_path / "edgeblur"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    text = UNIT.read_text().replace(
        "ExecStart=/opt/edgeblur/venv/bin/edgeblur", f"ExecStart={program}"
    )
    unit = tmp_path / "edgeblur.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


def test_systemd_verify_catches_a_bad_key(tmp_path: Path) -> None:
    """The check above can fail: a misspelt hardening key makes systemd-analyze complain."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    unit = tmp_path / "bad.service"
    unit.write_text("[Service]\nExecStart=/bin/true\nNoNewPrivilege=yes\n")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True
    )
    assert "Unknown key" in result.stderr


def test_compose_runs_the_image_as_the_docs_say() -> None:
    """docker-compose.yml: config and data volumes, the env file, a restart policy, the
    image's own health check, a read-only root and no core dumps (raw frames are in memory)."""
    import yaml

    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["edgeblur"]
    assert service["build"] == "."
    assert service["env_file"] == "edgeblur.env"
    assert service["restart"] == "unless-stopped"
    targets = {volume.split(":")[1] for volume in service["volumes"]}
    assert targets == {"/config", "/data"}
    assert service["read_only"] is True and service["ulimits"]["core"] == 0
    assert service["ports"] == ["127.0.0.1:8080:8080", "127.0.0.1:8554:8554"]
    (image_check,) = [
        json_or_shell_words(i["value"].split("CMD", 1)[1])
        for i in _final_stage("Dockerfile")
        if i["instruction"] == "HEALTHCHECK"
    ]
    assert service["healthcheck"]["test"] == ["CMD", *image_check]
    example = (REPO / "deploy/edgeblur.env.example").read_text()
    assert "EDGEBLUR_TOKEN=" in example
