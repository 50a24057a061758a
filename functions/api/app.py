"""Every B5 route except connect and callback: config, tenants, Start Sync, disconnect, runs and
their error logs, open problems, the preview and suggested links.

Each route: who is calling (claims, SPEC B4), one service call, the response model. Errors become
B5's error body in ``xpm_sync.api.http``, the one place that maps them.
"""

from __future__ import annotations

from xpm_sync.coldstart import loading

# The GC is paused while the handler's modules load: xpm_sync.coldstart.
with loading():
    from typing import Annotated, Any

    from aws_lambda_powertools.event_handler import Response
    from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
    from aws_lambda_powertools.event_handler.openapi.params import Path, Query
    from xpm_sync.api.caller import admin_caller
    from xpm_sync.api.http import (
        ROUTE_ROOT,
        admin_api,
        admin_lambda_handler,
        documented,
        domain_error_response,
        invalid_request_response,
    )
    from xpm_sync.api.models import (
        ConfigBody,
        ConfigResponse,
        EntriesPage,
        MatchAnswerRequest,
        MatchesPage,
        MatchOut,
        PreviewResponse,
        ProblemsPage,
        ProblemSummaryResponse,
        RunDetail,
        RunsPage,
        StartSyncResponse,
        TenantsResponse,
    )
    from xpm_sync.composition import frontend_url
    from xpm_sync.composition.api import api_service
    from xpm_sync.domain.entries import EntryEntity, Severity
    from xpm_sync.domain.errors import DomainError
    from xpm_sync.observability import logger

app = admin_api()

BASE = ROUTE_ROOT
# Entry codes are short upper-case names (docs/entry-codes.md); the bound keeps a filter, which
# the signed cursor repeats, far below the cursor's own limit.
CodeFilter = Annotated[str | None, Query(min_length=1, max_length=64, description="Only this entry code")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]


def _firm_id() -> str:
    return admin_caller(app.current_event.raw_event).firm_id


@app.get(
    BASE,
    summary="The firm's XPM integration",
    responses=documented(200, ConfigResponse, "The config and connection status", 401, 403, 422),
)
def get_config() -> ConfigResponse:
    return api_service().get_config(_firm_id())


@app.get(
    f"{BASE}/tenants",
    summary="Practice Manager connections",
    responses=documented(200, TenantsResponse, "The tenants", 401, 403, 409, 422, 502),
)
def list_tenants() -> TenantsResponse:
    return api_service().list_tenants(_firm_id())


@app.put(
    BASE,
    summary="Save the setup (Later)",
    responses=documented(200, ConfigResponse, "Saved", 400, 401, 403, 409, 422, 502),
)
def save_config(body: ConfigBody) -> ConfigResponse:
    return api_service().save_config(_firm_id(), body)


def _no_body() -> bool:
    body = app.current_event.body
    return body is None or not body.strip()


def invalid_request(error: RequestValidationError) -> Response[str]:
    """A body with bad values is 422, and no body (or a blank one) 400, except on a PUT for a firm
    that is not connected: the setup needs a connection first, and B5 answers that with 409
    NOT_CONNECTED whatever the body holds. A body that is not JSON is 400 before this is asked."""
    answer = invalid_request_response(error)
    if app.current_event.http_method == "PUT" and (answer.status_code == 422 or _no_body()):
        try:
            api_service().require_connection(_firm_id())
        except DomainError as refusal:
            return domain_error_response(refusal)
        except Exception:
            # The connection could not be checked (DynamoDB failing): the body's own answer stands.
            logger.exception("connection check failed while answering an invalid PUT body")
    return answer


app.exception_handler(RequestValidationError)(invalid_request)


@app.post(
    f"{BASE}/sync",
    status_code=202,
    summary="Start Sync",
    responses=documented(202, StartSyncResponse, "A manual run is queued", 401, 403, 409, 422, 429),
)
def start_sync() -> StartSyncResponse:
    return api_service().start_sync(_firm_id())


@app.delete(
    BASE, summary="Disconnect", responses=documented(200, ConfigResponse, "Disconnected", 401, 403, 422, 502)
)
def disconnect() -> ConfigResponse:
    return api_service().disconnect(_firm_id())


@app.get(
    f"{BASE}/runs",
    summary="Sync runs, newest first",
    responses=documented(200, RunsPage, "A page of runs", 400, 401, 403, 422),
)
def list_runs(
    limit: Annotated[int, Query(ge=1, le=100, description="Runs per page")] = 20,
    cursor: Cursor = None,
) -> RunsPage:
    return api_service().list_runs(_firm_id(), limit=limit, cursor=cursor)


@app.get(
    f"{BASE}/runs/<run_id>",
    summary="One run and its error log",
    responses=documented(200, RunDetail, "The run and its entries", 401, 403, 404, 422),
)
def get_run(run_id: Annotated[str, Path(description="run_id from the runs list")]) -> RunDetail:
    return api_service().get_run(_firm_id(), run_id)


@app.get(
    f"{BASE}/runs/<run_id>/entries",
    summary="A run's error log, page by page, errors first",
    responses=documented(200, EntriesPage, "A page of entries", 400, 401, 403, 404, 422),
)
def run_entries(
    run_id: Annotated[str, Path(description="run_id from the runs list")],
    cursor: Cursor = None,
    severity: Annotated[Severity | None, Query(description="Only errors, or only warnings")] = None,
    code: CodeFilter = None,
) -> EntriesPage:
    return api_service().run_entries(_firm_id(), run_id, cursor=cursor, severity=severity, code=code)


@app.get(
    f"{BASE}/problems",
    summary="The firm's open problems now",
    responses=documented(200, ProblemsPage, "A page of open problems", 400, 401, 403, 422),
)
def problems(
    cursor: Cursor = None,
    code: CodeFilter = None,
    entity: Annotated[EntryEntity | None, Query(description="Only problems of this kind of record")] = None,
) -> ProblemsPage:
    return api_service().problems(_firm_id(), cursor=cursor, code=code, entity=entity)


@app.get(
    f"{BASE}/problems/summary",
    summary="The open problems by code, and what was fixed since the last email",
    responses=documented(200, ProblemSummaryResponse, "The summary", 401, 403, 422),
)
def problem_summary() -> ProblemSummaryResponse:
    return api_service().problem_summary(_firm_id())


@app.post(
    f"{BASE}/preview",
    status_code=202,
    summary="Preview: queue a dry run, which writes nothing to Active",
    responses=documented(202, PreviewResponse, "A dry run is queued", 401, 403, 409, 422, 429),
)
def preview() -> PreviewResponse:
    return api_service().preview(_firm_id())


@app.get(
    f"{BASE}/matches",
    summary="Suggested links awaiting (or holding) the admin's answer",
    responses=documented(200, MatchesPage, "A page of suggested links", 400, 401, 403, 422),
)
def matches(cursor: Cursor = None) -> MatchesPage:
    return api_service().matches(_firm_id(), cursor=cursor)


@app.post(
    f"{BASE}/matches/<xpm_uuid>",
    summary="Answer a suggested link: link to an Active client, or create a new one",
    responses=documented(200, MatchOut, "The suggested link with its answer", 400, 401, 403, 404, 422),
)
def answer_match(
    xpm_uuid: Annotated[str, Path(description="xpm_uuid from the matches list")], body: MatchAnswerRequest
) -> MatchOut:
    return api_service().answer_match(_firm_id(), xpm_uuid, body)


# The routes above, for firms' admins only, logged, traced and answered with CORS.
_answer = admin_lambda_handler(app, frontend_url)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _answer(event, context)
