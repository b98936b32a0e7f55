"""Camera URLs as shown and logged: credentials masked. Here, at the bottom of the layers,
so sources and the service share one rule without importing the root config."""

from __future__ import annotations

import re

# Greedy up to the last "@": a password with a raw "/" or "@" is still masked whole (masking
# too much of a URL is harmless, too little leaks a credential).
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<cred>\S*)@", re.I)


def mask_credentials(url: str) -> str:
    """rtsp://user:secret@host/x -> rtsp://***@host/x, for anything shown or logged."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", url)
