"""Connect to Xero Practice Manager (SPEC A6, B4, B5): POST connect and POST callback, both as the
signed-in admin.

Xero sends the admin's browser back to the Active setup page (``OAUTH_REDIRECT_URI``), which posts
the ``code`` and ``state`` (or Xero's ``error``) here; the answer is the firm's config, as GET
/integrations/xpm gives it. Errors become B5's error body in ``xpm_sync.api.http``.
"""

from __future__ import annotations

from xpm_sync.coldstart import loading

# The GC is paused while the handler's modules load: xpm_sync.coldstart.
with loading():
    from typing import Annotated, Any

    from aws_lambda_powertools.event_handler.openapi.params import Body
    from xpm_sync.api.caller import admin_caller
    from xpm_sync.api.http import ROUTE_ROOT, admin_api, admin_lambda_handler, documented
    from xpm_sync.api.models import CallbackRequest, ConfigResponse, ConnectRequest, ConnectResponse
    from xpm_sync.composition import frontend_url
    from xpm_sync.composition.api import oauth_service

app = admin_api()


@app.post(
    f"{ROUTE_ROOT}/connect",
    summary="Start connecting to Xero Practice Manager",
    responses=documented(200, ConnectResponse, "Where to send the browser", 400, 401, 403, 422),
)
def connect(body: Annotated[ConnectRequest | None, Body()] = None) -> ConnectResponse:
    return oauth_service().start_connect(admin_caller(app.current_event.raw_event), body)


@app.post(
    f"{ROUTE_ROOT}/callback",
    summary="Finish connecting: the setup page posts what Xero sent back",
    description=(
        "400 OAUTH_STATE_INVALID: the state is not one the calling admin's own connect was issued "
        "(another firm or user), or it is malformed, used or expired; nothing is stored. "
        "400 XERO_CONSENT_DENIED: Xero answered with an error; the state is used up. "
        "422 NO_PRACTICE_MANAGER: the consent gave access to no Practice Manager practice; its tokens "
        "are revoked and the firm's previous connection stands. 502 XERO_UNAVAILABLE: the code "
        "exchange or the connections call failed at Xero."
    ),
    responses=documented(200, ConfigResponse, "Connected: the config", 400, 401, 403, 422, 502),
)
def callback(body: Annotated[CallbackRequest, Body()]) -> ConfigResponse:
    return oauth_service().complete_callback(admin_caller(app.current_event.raw_event), body)


# The routes above, for firms' admins only, logged, traced and answered with CORS.
_answer = admin_lambda_handler(app, frontend_url)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _answer(event, context)
