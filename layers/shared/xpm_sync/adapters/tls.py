"""One TLS context for every HTTPS client of a process (XPM and Xero's identity service).

Building a context reads the whole CA bundle, tens of milliseconds each time; every run makes its
own XPM client, so without this each firm's run paid it again. A context may be shared by any
number of clients and threads.
"""

from __future__ import annotations

import ssl
from functools import cache

import httpx


@cache
def shared_tls_context() -> ssl.SSLContext:
    """httpx's own default: certificates verified against certifi's bundle."""
    return httpx.create_ssl_context()
