"""The source interface: each plugin yields raw Frames, newest first, never queued unbounded."""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from types import TracebackType
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from edge.errors import SourceError
from edge.types import Frame
from edge.urls import mask_credentials, split_userinfo


class BaseSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(ABC):
    """A camera or file. Its public methods are called from one thread (the camera's ingest
    thread); live sources run a reader thread of their own behind them (see `LiveSource`).

    `open()` connects and raises SourceError if it cannot (retryable=False when only a config
    change can help: a missing file, an unset ${VAR}, a refused password).
    `read()` blocks until the next frame and returns it as a Frame (BGR uint8 (H, W, 3));
    returns None at the end of a finite source; raises SourceError on failure, retryable=True
    where calling read() again may succeed (a camera that is reconnecting).
    `close()` is idempotent and also ends a source that failed to open.

    Counters, read from any thread: `dropped` counts frames the source discarded to stay live
    (newest-frame-only policy), `reconnects` counts connections re-established after a loss.
    `fps_hint` is the nominal frame rate when the source knows it (after open()), else None.
    """

    dropped: int = 0
    reconnects: int = 0
    fps_hint: float | None = None

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def read(self) -> Frame | None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# Camera secrets are read only from variables with this prefix, so a camera URL cannot pull
# the API token or anything else in the service's environment into a request.
SECRET_ENV_PREFIX = "EDGEBLUR_CAM_"

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Characters that would move the end of the userinfo if a secret held them raw; they are
# percent-encoded when a secret is put in (":" only in the user name).
_USERINFO_DELIMITERS = "@/?#[]\\"


def mask_url(url: str) -> str:
    """A URL with its credentials masked (see `mask_credentials`)."""
    return mask_credentials(url)


def check_url_template(url: str, schemes: tuple[str, ...]) -> str:
    """Refuse a camera URL whose ${VAR} placeholders could send a secret elsewhere.

    Placeholders may stand only in the credentials (userinfo) part and name variables that
    start with SECRET_ENV_PREFIX; scheme, host, port and path are written out, and the scheme
    must be one of `schemes`. Raises ValueError naming the rule; returns `url`.
    """
    parts = split_userinfo(url)
    if parts is None or parts[0][:-3].lower() not in schemes:
        allowed = " or ".join(f"{scheme}://" for scheme in schemes)
        raise ValueError(f"must start with {allowed} (written out, not a ${{VAR}} placeholder)")
    head, userinfo, rest = parts
    authority_end = min((i for i in map(url[len(head) :].find, "/?#") if i != -1), default=-1)
    if authority_end != -1 and "@" in url[len(head) + authority_end :]:
        raise ValueError(
            "holds an '@' after the host, which readers of the URL disagree on: "
            "percent-encode it (%40)"
        )
    if "${" in head + rest:
        raise ValueError(
            "${VAR} placeholders may only stand in the user:password part of the URL, never "
            "in its host, port or path"
        )
    for name in PLACEHOLDER.findall(userinfo or ""):
        if not name.startswith(SECRET_ENV_PREFIX):
            raise ValueError(
                f"${{{name}}}: camera secrets are read only from variables named "
                f"{SECRET_ENV_PREFIX}*, e.g. ${{{SECRET_ENV_PREFIX}1_PASSWORD}}"
            )
    return url


def expand_env(template: str) -> str:
    """Put the environment's values in for each ${VAR} in the credentials of a camera URL.

    Called when a source connects (not when config is parsed), so secrets stay out of config
    files and a rotated password is picked up on the next connection. Only the userinfo part
    is expanded, only from variables named SECRET_ENV_PREFIX*, and each value goes in with
    the characters that would end the userinfo percent-encoded, so a secret can never move
    the host, port or path (`check_url_template` refuses placeholders anywhere else, and
    this refuses them again). An unset variable is a SourceError (retryable=False) naming
    the variable; messages only ever show the template, masked, never a value.
    """
    parts = split_userinfo(template)
    head, userinfo, rest = parts if parts is not None else ("", None, template)
    if "${" in head + rest:
        raise SourceError(
            f"{mask_url(template)}: ${{VAR}} placeholders are only read in the user:password "
            "part of a camera URL",
            retryable=False,
        )
    if userinfo is None:
        return template
    user, colon, password = userinfo.partition(":")

    def expanded(part: str, extra: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if not name.startswith(SECRET_ENV_PREFIX):
                raise SourceError(
                    f"{mask_url(template)}: ${{{name}}} is not read: camera secrets come only "
                    f"from variables named {SECRET_ENV_PREFIX}*",
                    retryable=False,
                )
            found = os.environ.get(name)
            if found is None:
                raise SourceError(
                    f"{mask_url(template)}: environment variable {name} is not set "
                    f"(set it in the service's environment, e.g. `export {name}=...`)",
                    retryable=False,
                )
            return quote(found, safe="".join(
                c for c in map(chr, range(33, 127)) if c not in _USERINFO_DELIMITERS + extra
            ))

        return PLACEHOLDER.sub(value, part)

    return f"{head}{expanded(user, ':')}{colon}{expanded(password, '')}@{rest}"
