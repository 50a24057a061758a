"""What an Active admin does on the setup page (SPEC A6), as HTTP calls to a served API.

Connect -> the browser at Xero's authorize URL (the simulator consents at once) -> Xero's 302 to
the setup page's callback URL with ``code`` and ``state`` -> the page posts them to the API's
callback as the signed-in admin -> config -> pick the tenant -> Submit -> Start Sync. ``make demo``
and ``make serve``'s tests use it against ``serve_api``, whose every request is the admin's.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from local.serve import DEMO_ADMIN_USER_ID, DEMO_OFFICE_CODE


def _json(response: httpx.Response, expected: int) -> Any:
    if response.status_code != expected:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} answered {response.status_code}, "
            f"expected {expected}: {response.text[:300]}"
        )
    return response.json()


def run_admin_flow(
    api_url: str,
    http: httpx.Client,
    *,
    sync_name: str = "XPM Sync",
    office_code: str = DEMO_OFFICE_CODE,
    notification_user_id: str = DEMO_ADMIN_USER_ID,
    default_partner_user_id: str | None = None,
    start_sync: bool = True,
) -> dict[str, Any]:
    """Walk the setup flow; returns each step's answer. Raises RuntimeError on an unexpected one.

    Without ``start_sync`` the admin stops at Submit with Later, as before a preview (SPEC A6, B6)."""
    base = f"{api_url.rstrip('/')}/integrations/xpm"
    seen: dict[str, Any] = {}

    connect = _json(http.post(f"{base}/connect", json={"sync_name": sync_name}), 200)
    seen["authorize_url"] = connect["authorize_url"]

    # The browser: Xero's consent page redirects to the Active setup page (OAUTH_REDIRECT_URI).
    consent = http.get(connect["authorize_url"], follow_redirects=False)
    if consent.status_code != 302:
        raise RuntimeError(f"Xero's authorize page answered {consent.status_code}")
    seen["setup_page"] = consent.headers["Location"]
    sent_back = {key: values[0] for key, values in parse_qs(urlsplit(seen["setup_page"]).query).items()}
    if "code" not in sent_back:
        raise RuntimeError(f"Xero sent the browser back without a code: {sent_back.get('error')}")

    # The setup page posts what Xero sent back, as the signed-in admin; the answer is the config.
    posted = {"code": sent_back["code"], "state": sent_back.get("state", "")}
    seen["connected"] = _json(http.post(f"{base}/callback", json=posted), 200)
    seen["config"] = _json(http.get(base), 200)
    tenants = _json(http.get(f"{base}/tenants"), 200)["tenants"]
    seen["tenants"] = tenants
    if not tenants:
        raise RuntimeError("Xero returned no Practice Manager tenant")
    tenant_id = seen["config"]["tenant_id"] or tenants[0]["tenant_id"]

    body: dict[str, Any] = {
        "sync_name": sync_name,
        "tenant_id": tenant_id,
        "default_office_code": office_code,
        "notification_user_id": notification_user_id,
    }
    if default_partner_user_id is not None:
        body["default_partner_user_id"] = default_partner_user_id
    seen["saved"] = _json(http.put(base, json=body), 200)
    if start_sync:
        seen["sync"] = _json(http.post(f"{base}/sync"), 202)
    return seen
