"""What the HTTP clients (REANA, PanDA) share about a request that got no reply."""

from __future__ import annotations

import requests
import urllib3.exceptions


def never_sent(exc: requests.RequestException) -> bool:
    """True when the request certainly did not reach the server (no connection was made).

    Only then may a call that changes state be repeated safely.
    """
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)
