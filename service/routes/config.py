"""Read and change the configuration.

A change (PUT: the whole config; PATCH: an RFC 7396 JSON merge patch on the current one) goes
through, in order: token check -> a config file to write (409 without one) -> JSON body -> masked
secrets put back -> pydantic validation (422 naming each field) -> atomic write of the YAML file
-> control.apply_config -> one audit line. If the pipeline refuses the config, the previous file
is written back, so the file always describes what runs. Comments in the YAML file do not
survive a write.
"""

from __future__ import annotations

import copy
import json
import logging
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
from service.schemas import ConfigUpdate, Loc, SecretError, mask_secrets, restore_masked_secrets

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


async def _json_object(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"send JSON (application/json or application/merge-patch+json), not {content_type}",
        )
    raw = await request.body()
    try:
        data = json.loads(raw)
    except ValueError as error:
        detail = [{"loc": [], "msg": f"body is not valid JSON: {error}", "type": "json"}]
        raise _invalid(detail) from None
    if not isinstance(data, dict):
        raise _invalid([{"loc": [], "msg": "body must be a JSON object", "type": "dict_type"}])
    return data


def _invalid(detail: list[dict[str, Any]]) -> HTTPException:
    return HTTPException(422, detail)


def _change_config(
    state: ServiceState,
    path: Path,
    caller: Caller,
    method: str,
    make_candidate: Callable[[dict[str, Any]], dict[str, Any]],
) -> ConfigUpdate:
    """Runs in a worker thread; the lock makes concurrent changes apply one after the other."""
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
        if changes:
            _save_and_apply(state.control, path, old, new)
            entry = audit_entry(
                caller.address, caller.forwarded_for, caller.token_fingerprint, method, changes
            )
            state.audit.append(entry)
            logger.info(
                "config changed by %s via %s: %s",
                caller.address,
                method,
                ", ".join(change.path for change in changes),
            )
    return ConfigUpdate(
        config=mask_secrets(new_dict),
        changes=changes,
        restart_required=[c.path for c in changes if c.path.startswith("service.")],
    )


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
