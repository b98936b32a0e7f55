"""Camera URLs as shown and logged: credentials masked. Here, at the bottom of the layers,
so sources and the service share one rule without importing the root config."""

from __future__ import annotations

import re

_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.I)
# Where the credentials of one URL may end inside free text: up to the last "@" before the end
# of the line (a password may hold spaces, "/" or "@"; masking too much is harmless).
_TEXT_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<cred>[^\r\n]*)@", re.I)


def split_userinfo(url: str) -> tuple[str, str | None, str] | None:
    """`scheme://`, the userinfo (None without one) and the rest (host, port, path, ...) of a
    URL, or None if `url` does not start with a scheme. The userinfo runs to the last "@"
    before the path, so a raw "@" in a password stays in it."""
    match = _SCHEME.match(url)
    if match is None:
        return None
    head, rest = url[: match.end()], url[match.end() :]
    path_at = len(rest)
    for delimiter in "/?#":
        found = rest.find(delimiter, rest.rfind("@") + 1 if "@" in rest else 0)
        if found != -1:
            path_at = min(path_at, found)
    authority = rest[:path_at]
    if "@" not in authority:
        return head, None, rest
    userinfo, _, host = authority.rpartition("@")
    return head, userinfo, host + rest[path_at:]


def mask_credentials(text: str) -> str:
    """rtsp://user:secret@host/x -> rtsp://***@host/x, for anything shown or logged.

    A whole URL is split by `split_userinfo` (so a password holding spaces, "/" or "@" is
    masked whole); in free text (an error message quoting a URL) everything from a scheme to
    the last "@" on its line is masked."""
    parts = split_userinfo(text)
    if parts is not None and "\n" not in text:
        head, userinfo, rest = parts
        return text if userinfo is None else f"{head}***@{rest}"
    return _TEXT_CREDENTIALS.sub(r"\g<scheme>***@", text)
