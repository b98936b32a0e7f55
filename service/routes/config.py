"""Read and change the configuration.

A change (PUT: the whole config; PATCH: an RFC 7396 JSON merge patch on the current one) is one
transaction, in order: token check -> a config file to write (409 without one) -> strict JSON
body (422: not UTF-8, lone surrogates, NaN/Infinity, too deep) -> masked secrets put back ->
pydantic validation (422 naming each field) -> file-only settings (403) -> where camera secrets
go (403) -> the privacy floor (422, service.privacy) -> the audit line (503 if it cannot be
written: nothing changes) -> atomic write of the YAML file -> control.apply_config. If the file
write or the pipeline fails, the previous file is written back (the file always describes what
runs) and a second audit line records the failure. Comments in the YAML file do not survive a
write."""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from edge.config import EdgeblurConfig
from edge.configfile import config_to_dict, save_config
from edge.control import Control
from edge.errors import ConfigError
from service.audit import audit_entry, diff_configs
from service.deps import Caller, ControlDep, ServiceState, StateDep, TokenDep, WriteTokenDep
from service.privacy import privacy_settings
from service.schemas import (
    ConfigChange,
    ConfigUpdate,
    Loc,
    SecretError,
    check_secret_hosts,
    mask_secrets,
    restore_masked_secrets,
)

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/config", tags=["config"])

_CHANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "A token is configured and the request did not carry it."},
    403: {"description": "No token is configured, so changes are refused."},
    409: {"description": "The service runs without a config file; nothing could keep a change."},
    413: {"description": "The body is larger than service.max_body_bytes."},
    415: {"description": "The body is not JSON."},
    422: {"description": "Invalid config; `detail` lists each field path and what is wrong."},
}


def _body_doc(description: str, media_types: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "description": description}
    return {
        "requestBody": {
            "required": True,
            "content": {media_type: {"schema": schema} for media_type in media_types},
        }
    }


@router.get("", summary="The config in force; credentials in URLs and the token are masked")
def get_config(control: ControlDep, _caller: TokenDep) -> dict[str, Any]:
    result: dict[str, Any] = mask_secrets(config_to_dict(control.config()))
    return result


@router.get("/schema", summary="JSON schema of the config (what PUT accepts)")
def get_schema(_caller: TokenDep) -> dict[str, Any]:
    return EdgeblurConfig.model_json_schema()


@router.get("/audit", summary="Applied config changes, newest last")
def get_audit(
    state: StateDep,
    _caller: TokenDep,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Return the last N entries.")] = 100,
) -> list[dict[str, Any]]:
    return state.audit.read(limit)


@router.put(
    "",
    summary="Replace the whole config",
    description="Send an EdgeblurConfig (schema: GET /api/config/schema). Masked values from "
    "GET (`rtsp://***@host/...`, token `***`) keep the stored secret.",
    response_model=ConfigUpdate,
    responses=_CHANGE_RESPONSES,
    openapi_extra=_body_doc("A whole EdgeblurConfig.", ["application/json"]),
)
async def put_config(request: Request, state: StateDep, caller: WriteTokenDep) -> ConfigUpdate:
    path = _require_config_file(state)
    body = await _json_object(request)
    return await run_in_threadpool(
        _change_config, state, path, caller, "PUT", lambda _current: body
    )


@router.patch(
    "",
    summary="Change part of the config (JSON merge patch, RFC 7396)",
    description="Objects merge into the current config; null removes a key (back to its "
    "default); a list such as `cameras` is replaced whole.",
    response_model=ConfigUpdate,
    responses=_CHANGE_RESPONSES,
    openapi_extra=_body_doc(
        "A merge patch.", ["application/merge-patch+json", "application/json"]
    ),
)
async def patch_config(request: Request, state: StateDep, caller: WriteTokenDep) -> ConfigUpdate:
    path = _require_config_file(state)
    patch = await _json_object(request)
    return await run_in_threadpool(
        _change_config, state, path, caller, "PATCH", lambda current: merge_patch(current, patch)
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _require_config_file(state: ServiceState) -> Path:
    if state.settings.config_path is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "this service was started without a config file, so a change would be lost at the "
            "next restart; save GET /api/config to a YAML file (with real credentials) and "
            "start `edgeblur serve` with it",
        )
    return state.settings.config_path


# Nesting deeper than this is refused before validation; a config is at most about 6 deep.
MAX_JSON_DEPTH = 32

# Sections an API change may not touch: who may call it (token, token_env), where it listens
# (the RTSP server too, which also names the program it runs), where its trail and data go,
# which models it loads, the privacy floor itself, and where events go (an MQTT broker with the
# password from an environment variable the section names, so pointing it elsewhere could send
# any of the service's secrets away). Only the config file on the box sets them.
FILE_ONLY = (
    "service.token",
    "service.token_env",
    "service.host",
    "service.rtsp",
    "service.audit_log",
    "service.camera_networks",
    "storage.data_dir",
    "models.cache_dir",
    "privacy_floor",
    "mqtt",
)


async def _json_object(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"send JSON (application/json or application/merge-patch+json), not {content_type}",
        )
    data = parse_strict_json(await request.body())
    if not isinstance(data, dict):
        raise _invalid([{"loc": [], "msg": "body must be a JSON object", "type": "dict_type"}])
    return data


class StrictJsonError(ValueError):
    def __init__(self, loc: list[Any], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def parse_strict_json(raw: bytes) -> Any:
    """JSON that can be stored, logged and shown back exactly: UTF-8 without lone surrogates
    (which json.loads lets through as "\\ud800" escapes), finite numbers only (no NaN,
    Infinity or a 1e999 that overflows to it), at most MAX_JSON_DEPTH levels deep. Anything
    else is a 422 naming where it is, before the body reaches validation."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _invalid(
            [{"loc": [], "msg": f"body is not valid UTF-8 (byte {error.start})", "type": "json"}]
        ) from None

    def refuse_constant(name: str) -> Any:
        raise StrictJsonError([], f"{name} is not a number JSON allows")

    try:
        data = json.loads(text, parse_constant=refuse_constant)
        _check_values(data, [])
    except StrictJsonError as error:
        raise _invalid([{"loc": error.loc, "msg": str(error), "type": "json"}]) from None
    except RecursionError:
        raise _invalid(
            [{"loc": [], "msg": f"nested deeper than {MAX_JSON_DEPTH} levels", "type": "json"}]
        ) from None
    except ValueError as error:
        detail = [{"loc": [], "msg": f"body is not valid JSON: {error}", "type": "json"}]
        raise _invalid(detail) from None
    return data


def _check_values(value: Any, loc: list[Any]) -> None:
    if len(loc) > MAX_JSON_DEPTH:
        raise StrictJsonError(loc[:MAX_JSON_DEPTH], f"nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value, loc)
    elif isinstance(value, float) and not math.isfinite(value):
        raise StrictJsonError(loc, "numbers must be finite (no NaN, Infinity or overflow)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, loc)
            _check_values(item, [*loc, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_values(item, [*loc, index])


def _check_text(text: str, loc: list[Any]) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise StrictJsonError(
            loc, "text holds a lone UTF-16 surrogate, which is not valid Unicode"
        ) from None


def _invalid(detail: list[dict[str, Any]]) -> HTTPException:
    return HTTPException(422, detail)


def _change_config(
    state: ServiceState,
    path: Path,
    caller: Caller,
    method: str,
    make_candidate: Callable[[dict[str, Any]], dict[str, Any]],
) -> ConfigUpdate:
    """Runs in a worker thread; the lock makes concurrent changes apply one after the other.

    One transaction: everything is checked first (secrets, schema, file-only sections, where
    secrets may go, the privacy floor), then the audit line is written, then the file, then
    the pipeline. If the audit line cannot be written nothing changes; if the file or the
    pipeline fails, the old file is put back and a second audit line says the change failed.
    """
    with state.config_lock:
        old = state.control.config()
        old_dict = config_to_dict(old)
        candidate = make_candidate(copy.deepcopy(old_dict))
        try:
            restore_masked_secrets(candidate, old_dict)
        except SecretError as error:
            detail = [{"loc": list(error.loc), "msg": str(error), "type": "masked_secret"}]
            raise _invalid(detail) from None
        try:
            new = EdgeblurConfig.model_validate(candidate)
        except ValidationError as error:
            raise _invalid(_validation_details(error, candidate)) from None
        new_dict = config_to_dict(new)
        changes = diff_configs(old_dict, new_dict)
        if not changes:
            return ConfigUpdate(config=mask_secrets(new_dict), changes=[], restart_required=[])
        _refuse_file_only(state, changes)
        try:
            check_secret_hosts(old, new)
        except SecretError as error:
            state.metrics.refused("secret_host")
            where = ".".join(str(part) for part in error.loc)
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"{where}: {error}") from None
        settings = privacy_settings(old, new)
        violations = [setting for setting in settings if setting.violation]
        if violations:
            state.metrics.refused("privacy_floor")
            raise _invalid(
                [
                    {
                        "loc": setting.path.replace("[", ".").replace("]", "").split("."),
                        "msg": f"{setting.path}={setting.new!r} crosses the privacy floor "
                        f"(privacy_floor.{setting.past_floor}, set in the config file on the "
                        "box; the API cannot change it)",
                        "type": "privacy_floor",
                    }
                    for setting in violations
                ]
            )
        weakened = [setting.path for setting in settings if setting.weakening]
        entry = audit_entry(
            caller.address, caller.forwarded_for, caller.token_fingerprint, method, changes
        )
        entry["weakens_privacy"] = weakened
        try:
            state.audit.append(entry)
        except Exception as error:
            logger.error("config change refused: cannot write the audit log: %s", error)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "cannot write the audit log, so nothing was changed; check the disk and the "
                "audit log's permissions",
            ) from None
        try:
            _save_and_apply(state.control, path, old, new)
        except BaseException as error:
            _audit_failure(state, entry, error)
            raise
        logger.info(
            "config changed by %s via %s: %s",
            caller.address,
            method,
            ", ".join(change.path for change in changes),
        )
        if weakened:
            state.metrics.weakened(weakened)
            logger.warning(
                "PRIVACY WEAKENED by %s via %s (token %s), within the privacy floor: %s",
                caller.address,
                method,
                caller.token_fingerprint,
                ", ".join(weakened),
            )
    return ConfigUpdate(
        config=mask_secrets(new_dict),
        changes=changes,
        restart_required=[c.path for c in changes if c.path.startswith("service.")],
        weakens_privacy=weakened,
    )


def _refuse_file_only(state: ServiceState, changes: list[ConfigChange]) -> None:
    touched = [
        change.path
        for change in changes
        if any(change.path == p or change.path.startswith((p + ".", p + "[")) for p in FILE_ONLY)
    ]
    if touched:
        state.metrics.refused("file_only")
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"{', '.join(touched)} can only be set in the config file on the box (who may "
            "call the API, where it listens, where its audit trail and data go, which models "
            "load, and the privacy floor are not the API's to change)",
        )


def _audit_failure(state: ServiceState, entry: dict[str, Any], error: BaseException) -> None:
    """Record that an audited change did not take effect. Best effort: the change itself has
    been undone, so a failure here is logged, not raised over the original error."""
    reason = getattr(error, "detail", None) or type(error).__name__
    failed = {**entry, "outcome": "failed, nothing changed", "reason": str(reason)[:500]}
    try:
        state.audit.append(failed)
    except Exception as audit_error:
        logger.error("cannot record a failed config change in the audit log: %s", audit_error)


def _save_and_apply(
    control: Control, path: Path, old: EdgeblurConfig, new: EdgeblurConfig
) -> None:
    try:
        save_config(new, path)
    except OSError as error:
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR,
            f"cannot write {path}: {error.strerror or error}; nothing was changed",
        ) from None
    try:
        control.apply_config(new)
    except Exception as error:
        save_config(old, path)  # the file must keep describing what runs
        if isinstance(error, ConfigError):
            raise _invalid(
                [{"loc": [], "msg": f"the pipeline refused this config: {error}", "type": "apply"}]
            ) from None
        raise


def _validation_details(error: ValidationError, document: Any) -> list[dict[str, Any]]:
    return [
        {"loc": _document_loc(item["loc"], document), "msg": item["msg"], "type": item["type"]}
        for item in error.errors(include_url=False, include_input=False, include_context=False)
    ]


def _document_loc(loc: tuple[Any, ...], document: Any) -> list[Any]:
    """pydantic's error path with union tags dropped, so it points into the sent document:
    ('cameras', 0, 'source', 'rtsp', 'url') -> ['cameras', 0, 'source', 'url']."""
    path: Loc = ()
    node = document
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue  # the discriminator tag of a tagged union, not a key of the document
        path = (*path, part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return list(path)
