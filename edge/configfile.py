"""Reading and writing config files. Errors name the file and the field path."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edge.config import EdgeblurConfig
from edge.errors import ConfigError


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(root)"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


def parse_config(data: Any, origin: str = "config") -> EdgeblurConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{origin}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return EdgeblurConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{origin}: {format_validation_error(error)}") from None


def load_config(path: Path | None) -> EdgeblurConfig:
    """Load and validate a YAML file; None gives the built-in defaults (the demo camera)."""
    if path is None:
        return EdgeblurConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_config(data, str(path))


def model_cache_dir(cache_dir: Path | None, config_path: Path | None) -> Path | None:
    """The model cache of a command with --cache-dir and --config: the directory given, else
    the config file's models.cache_dir (the one `serve` uses), else None (the default)."""
    if cache_dir is not None or config_path is None:
        return cache_dir
    return load_config(config_path).models.cache_dir


def config_to_dict(config: EdgeblurConfig) -> dict[str, Any]:
    # None is kept: for a field whose default is not None (centerface small_face_threshold)
    # it is a setting, and dropping it would bring the default back at the next load.
    return config.model_dump(mode="json")


def save_config(config: EdgeblurConfig, path: Path) -> None:
    """Write atomically: a crash mid-write leaves the old file, never half a new one."""
    path = Path(path)
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
