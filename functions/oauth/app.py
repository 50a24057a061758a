"""Connect to Xero Practice Manager (SPEC A6, B5): POST connect (admins) and GET callback (public).

The callback always answers with a redirect to the Active setup page, ``?connected=1`` or
``?error=<code>``: the browser that lands here belongs to a person, not to an API client.
"""

from __future__ import annotations

from xpm_sync.coldstart import loading

# The GC is paused while the handler's modules load: xpm_sync.coldstart.
with loading():
    from typing import Annotated, Any

    from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
    from aws_lambda_powertools.event_handler.openapi.params import Body, Query
    from aws_lambda_powertools.logging import correlation_paths
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from xpm_sync.api.caller import admin_caller
    from xpm_sync.api.http import (
        ROUTE_ROOT,
        documented,
        install_error_handlers,
        resolve_for_admins,
        with_cors,
    )
    from xpm_sync.api.models import ConnectRequest, ConnectResponse
    from xpm_sync.api.service import CallbackQuery, setup_page_url
    from xpm_sync.composition import frontend_url, oauth_service
    from xpm_sync.observability import logger, tracer
    from xpm_sync.runtime import usable_context

CALLBACK_PATH = f"{ROUTE_ROOT}/callback"

app = APIGatewayRestResolver(enable_validation=True)
install_error_handlers(app)


@app.post(
    f"{ROUTE_ROOT}/connect",
    summary="Start connecting to Xero Practice Manager",
    responses=documented(200, ConnectResponse, "Where to send the browser", 400, 401, 403, 415, 422),
)
def connect(body: Annotated[ConnectRequest | None, Body()] = None) -> ConnectResponse:
    return oauth_service().start_connect(admin_caller(app.current_event.raw_event), body)


@app.get(
    CALLBACK_PATH,
    summary="Xero's redirect after consent (public; 302 to the Active setup page)",
    security=[],
    responses={302: {"description": "To {FRONTEND_URL}/admin/integrations/xpm?connected=1 or ?error=..."}},
)
def callback(
    # Lists, because a browser can repeat a parameter and this route must answer every request
    # with a redirect, never a 422; a repeated value counts as missing.
    code: Annotated[list[str] | None, Query()] = None,
    state: Annotated[list[str] | None, Query()] = None,
    error: Annotated[list[str] | None, Query()] = None,
) -> Response[str]:
    try:
        location = oauth_service().complete_callback(CallbackQuery.of(code=code, state=state, error=error))
    except Exception:
        # A person's browser is waiting: send it back to the setup page with an error rather
        # than leave it on a bare 500. Tokens are never in our exception messages.
        logger.exception("xpm connect callback failed")
        location = setup_page_url(frontend_url(), error="server_error")
    return Response(
        status_code=302,
        body="",
        headers={"Location": location, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def _handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    answer = resolve_for_admins(app, event, context, public_paths={CALLBACK_PATH})
    return with_cors(answer, frontend_url())


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    answer: dict[str, Any] = _handle(event, usable_context(context))
    return answer
