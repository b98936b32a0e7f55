"""The service's pure parts, table-driven: merge patch, secret masking and restoring, config
diffs, the audit file."""

from __future__ import annotations

import json

import pytest

from service.audit import AuditLog, diff_configs
from service.routes.config import merge_patch
from service.schemas import SecretError, mask_secrets, restore_masked_secrets

# RFC 7396, Appendix A: (target, patch, result).
RFC7396_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC7396_EXAMPLES)
def test_merge_patch_follows_rfc7396(target, patch, result):
    before = json.dumps(target)
    assert merge_patch(target, patch) == result
    assert json.dumps(target) == before  # the target is not modified


def cameras(*items: tuple[str, str]) -> dict:
    return {"cameras": [{"id": i, "source": {"type": "rtsp", "url": u}} for i, u in items]}


def test_mask_secrets_masks_urls_and_the_token_only():
    config = {
        "service": {"token": "t" * 20, "token_env": "EDGEBLUR_TOKEN"},
        **cameras(("a", "rtsp://u:p@h/x"), ("b", "rtsp://h/y")),
        "storage": {"data_dir": "user:pass@not-a-url"},
    }
    masked = mask_secrets(config)
    assert masked["service"] == {"token": "***", "token_env": "EDGEBLUR_TOKEN"}
    assert [c["source"]["url"] for c in masked["cameras"]] == ["rtsp://***@h/x", "rtsp://h/y"]
    assert masked["storage"] == config["storage"]
    assert config["service"]["token"] == "t" * 20  # a copy


@pytest.mark.parametrize(
    ("sent", "restored"),
    [
        ("rtsp://***@h/x", "rtsp://u:p@h/x"),  # round trip: the stored secret is kept
        ("rtsp://u2:p2@h/x", "rtsp://u2:p2@h/x"),  # new credentials replace it
        ("rtsp://h/x", "rtsp://h/x"),  # and can be removed
    ],
)
def test_restore_masked_secrets(sent, restored):
    new = cameras(("a", sent))
    restore_masked_secrets(new, cameras(("a", "rtsp://u:p@h/x")))
    assert new["cameras"][0]["source"]["url"] == restored


@pytest.mark.parametrize(
    ("new", "loc"),
    [
        (cameras(("a", "rtsp://***@elsewhere/x")), ("cameras", 0, "source", "url")),
        (cameras(("a", "rtsp://***@h/other-path")), ("cameras", 0, "source", "url")),
        (
            cameras(("a", "rtsp://u:p@h/x"), ("z", "rtsp://***@h/x")),  # z has no stored URL
            ("cameras", 1, "source", "url"),
        ),
        ({"service": {"token": "***"}}, ("service", "token")),
    ],
)
def test_masked_secrets_without_a_match_are_refused(new, loc):
    with pytest.raises(SecretError) as raised:
        restore_masked_secrets(new, cameras(("a", "rtsp://u:p@h/x")))
    assert raised.value.loc == loc


def paths(changes) -> list[str]:
    return [change.path for change in changes]


def test_diff_reports_cameras_by_id():
    old = cameras(("a", "rtsp://h/1"), ("b", "rtsp://h/2"))
    added = cameras(("new", "rtsp://h/0"), ("a", "rtsp://h/1"), ("b", "rtsp://h/2"))
    [change] = diff_configs(old, added)
    assert change.path == "cameras[new]"
    assert change.old is None
    assert change.new["source"]["url"] == "rtsp://h/0"

    [removed] = diff_configs(old, cameras(("b", "rtsp://h/2")))
    assert (removed.path, removed.new) == ("cameras[a]", None)

    [order] = diff_configs(old, cameras(("b", "rtsp://h/2"), ("a", "rtsp://h/1")))
    assert (order.path, order.old, order.new) == ("cameras (order)", ["a", "b"], ["b", "a"])

    assert diff_configs(old, old) == []


def test_diff_of_a_password_change_shows_that_it_changed_not_what_to():
    old = cameras(("a", "rtsp://admin:old-secret@h/1"))
    [change] = diff_configs(old, cameras(("a", "rtsp://admin:new-secret@h/1")))
    assert (change.path, change.old, change.new) == (
        "cameras[a].source.url",
        "rtsp://***@h/1",
        "rtsp://***@h/1",
    )
    [token] = diff_configs({"service": {}}, {"service": {"token": "x" * 20}})
    assert (token.path, token.old, token.new) == ("service.token", None, "***")


def test_audit_log_survives_a_torn_line(tmp_path):
    log = AuditLog(tmp_path / "nested" / "audit.log")
    assert log.read(10) == []
    log.append({"n": 1})
    with log.path.open("ab") as handle:
        handle.write(b'{"n": 2, "cut sh')  # a crash mid-write
    log.append({"n": 3})
    log.append({"n": 4})
    assert log.read(10) == [{"n": 1}, {"n": 3}, {"n": 4}]
    assert log.read(2) == [{"n": 3}, {"n": 4}]
