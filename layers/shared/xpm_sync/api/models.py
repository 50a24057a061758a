"""The API's request and response bodies (SPEC B5), distinct from the stored models.

Requests are validated by Powertools against these models (422 naming the field); responses are
built from stored models by the explicit mapping functions at the bottom, so nothing stored (and
never a token) reaches a response by accident.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from xpm_sync.domain.entries import MAX_LABEL_CHARS, MAX_MESSAGE_CHARS, Entry, EntryEntity, Severity, shorten
from xpm_sync.domain.firm import ConnectionStatus, FirmConfig
from xpm_sync.domain.near_match import MatchAnswer, MatchReason, Suggestion
from xpm_sync.domain.problem_summary import ProblemSummary
from xpm_sync.domain.problems import RecordState
from xpm_sync.domain.runs import RunStatus, SyncRun, Trigger

# Whitespace-only is as good as missing; the bounds stop junk long before DynamoDB's item limit.
SyncName = Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=100)]
Identifier = Annotated[
    str, StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=64)
]
OfficeCode = Annotated[
    str, StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=32)
]


class _Request(BaseModel):
    # Unknown keys are ignored: the frontend may send back the config it read, status and all,
    # and none of those extra keys can change anything here.
    model_config = ConfigDict(extra="ignore")


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConnectRequest(_Request):
    sync_name: SyncName | None = Field(default=None, description="A name for this sync, shown in Active.")


class ConnectResponse(_Response):
    authorize_url: str = Field(description="Send the admin's browser here to sign in at Xero.")


# Xero's own values are short; the bounds only stop junk. The state is checked by the state store
# (a malformed one is OAUTH_STATE_INVALID, like any other state that is not the caller's).
AuthorizationCode = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=2048)]
XeroErrorCode = Annotated[str, StringConstraints(strict=True, max_length=256)]


class CallbackRequest(_Request):
    """What Xero put on the setup page's URL (``{FRONTEND_URL}/admin/integrations/xpm/callback``),
    posted by that page as the signed-in admin: ``code`` and ``state``, or ``error`` and ``state``."""

    state: str = Field(description="The state of the authorize URL, as Xero sent it back.")
    code: AuthorizationCode | None = Field(default=None, description="Xero's authorization code.")
    error: XeroErrorCode | None = Field(
        default=None, description="Xero's error instead of a code (access_denied: the admin refused)."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_state_is_a_state_not_issued(cls, body: object) -> object:
        # No state, or one that is not text, is a state not issued to the caller: the state store
        # refuses it with 400 OAUTH_STATE_INVALID like any other (SPEC B4), not a 422 about the body.
        if isinstance(body, dict) and not isinstance(body.get("state"), str):
            body = {**body, "state": ""}
        # A page that posts every parameter of the URL sends an empty ``error`` beside Xero's code
        # when there was none; an empty ``error`` alone is still Xero answering with an error.
        if isinstance(body, dict) and body.get("error") == "" and body.get("code"):
            body = {k: v for k, v in body.items() if k != "error"}
        return body


class ConfigBody(_Request):
    sync_name: SyncName
    tenant_id: Identifier = Field(description="One of GET /integrations/xpm/tenants.")
    default_office_code: OfficeCode = Field(description="An office of the firm in Active.")
    default_partner_user_id: Identifier | None = Field(
        default=None,
        description=(
            "Written as the default office's Default Partner; null clears it, and leaving the key "
            "out leaves it as it is."
        ),
    )
    notification_user_id: Identifier = Field(description="An Active user; emailed when a run fails.")


class ConnectedBy(_Response):
    name: str | None
    email: str | None


class Counts(_Response):
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    skipped: int = 0
    # Only a dry run counts it (SPEC B6): absent on a real run, whose links count as updated.
    linked: int | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="Dry runs only: XPM clients it would link to an Active client already there.",
    )


class RunOut(_Response):
    firm_id: str
    run_id: str
    kind: Literal["run"] = "run"
    trigger: Trigger
    status: RunStatus
    started_at: str
    finished_at: str | None
    counts: dict[str, Counts]
    xpm_calls: int
    full_read: bool
    entry_count: int
    dry_run: bool = Field(description="A preview: planned, nothing written to Active (SPEC B6).")


class EntryOut(_Response):
    firm_id: str
    run_id: str
    kind: Literal["entry"] = "entry"
    severity: Severity
    entity: EntryEntity
    # Absent for run-level entries, as in the stored item (SPEC B3).
    xpm_uuid: str | None = Field(default=None, exclude_if=lambda value: value is None)
    label: str
    code: str
    message: str
    suggestion: str


class RunDetail(RunOut):
    entries: list[EntryOut] = Field(description="The first page of the run's error log, errors first.")
    entries_next_cursor: str | None = Field(
        description="Pass as ?cursor= to GET .../runs/{run_id}/entries for the rest; null when none."
    )


class EntriesPage(_Response):
    entries: list[EntryOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class RunsPage(_Response):
    runs: list[RunOut]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next (older) page; null on the last page."
    )


class ConfigResponse(_Response):
    firm_id: str
    status: ConnectionStatus
    sync_name: str | None
    tenant_id: str | None
    tenant_name: str | None
    default_office_code: str | None
    default_partner_user_id: str | None = Field(description="The default office's Default Partner.")
    notification_user_id: str | None
    sync_enabled: bool
    run_pending: bool
    connected_by: ConnectedBy | None
    connected_at: str | None
    last_run: RunOut | None


class Tenant(_Response):
    tenant_id: str
    tenant_name: str | None


class TenantsResponse(_Response):
    tenants: list[Tenant]


class StartSyncResponse(_Response):
    status: str = Field(default="queued", description="The manual run is queued.")
    sync_enabled: bool = True


class PreviewResponse(_Response):
    run_id: str = Field(description="The dry run queued: read it with GET .../runs/{run_id}.")


class ProblemOut(_Response):
    """One open problem: one (record, code) pair (SPEC B6)."""

    code: str
    severity: Severity
    entity: EntryEntity
    # Absent for a run-level problem, and for a record XPM sent without a UUID (keyed by label).
    xpm_uuid: str | None = Field(default=None, exclude_if=lambda value: value is None)
    label: str
    message: str
    suggestion: str
    first_seen: str = Field(description="Start time of the first run that reported it (ISO 8601 UTC).")
    last_seen: str = Field(description="Start time of the latest run that reported it (ISO 8601 UTC).")
    runs: int = Field(description="How many runs reported it.")
    web_url: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="The record's page in XPM, when XPM sent one.",
    )


class ProblemsPage(_Response):
    problems: list[ProblemOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class ProblemGroupOut(_Response):
    code: str
    severity: Severity
    count: int = Field(description="How many open problems have this code.")
    suggestion: str
    examples: list[str] = Field(description="The labels of up to 5 of its records.")


class ProblemSummaryResponse(_Response):
    groups: list[ProblemGroupOut] = Field(description="The open problems by code, the most pressing first.")
    open: int
    fixed_since_last_email: int


class MatchOut(_Response):
    """A suggested link (SPEC B6): an XPM client and the unlinked Active client it may be."""

    xpm_uuid: str
    label: str = Field(description="The XPM client, as an admin knows it.")
    client_id: str = Field(description="The Active client it would link to.")
    client_label: str
    reason: MatchReason = Field(description="What they share: the ABN, or the name.")
    answer: MatchAnswer | None = Field(description="The admin's answer; null while it waits for one.")


class MatchesPage(_Response):
    matches: list[MatchOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class MatchAnswerRequest(_Request):
    action: MatchAnswer = Field(
        description="link: to the Active client client_id names; create: as a new Active client."
    )
    client_id: Identifier | None = Field(
        default=None,
        description="For link: an Active client of the firm not linked to XPM (not read for create).",
    )


class ErrorDetail(_Response):
    code: str
    message: str
    field: str | None = Field(default=None, description="The request field at fault, for 422 answers.")
    retry_after: int | None = Field(default=None, description="Seconds to wait, on 429 answers.")


class ErrorBody(_Response):
    error: ErrorDetail
    retry_after: int | None = Field(
        default=None, description="Seconds to wait, on 429 answers (the same as error.retry_after)."
    )


def run_out(run: SyncRun) -> RunOut:
    # A run is answered as it is stored: every field the API shows, each counts map validated
    # as Counts. Only RunOut's fields are read, so a field the store adds stays out of answers.
    return RunOut.model_validate(run.model_dump(include=set(RunOut.model_fields)))


# --- What one item of a page may cost (SPEC B5: every answer under 1 MB) ------------------------
# Labels and messages are cut when entries are made (domain.entries); the values below come from
# XPM or Active as they are, and one field can be hundreds of kilobytes. No real XPM UUID or web
# link comes near these lengths: an identifier keeps the length DynamoDB allows a key, and a link
# that long is dropped, since a link cut short leads nowhere.
MAX_XPM_UUID_CHARS = 1024
MAX_WEB_URL_CHARS = 2048
# The most a page's JSON may take, as the handler writes it; the rest of 1 MB is the proxy's.
ANSWER_BUDGET_BYTES = 900_000


def answer_bytes(answer: BaseModel) -> int:
    """The size of an answer's body at most: as Powertools writes it (json.dumps, ASCII only, so a
    character costs up to 12 bytes), with every optional field written out."""
    return len(json.dumps(answer.model_dump(mode="json"), separators=(",", ":")))


def items_bytes(items: Iterable[BaseModel]) -> int:
    """What these items of a list add to an answer, each as ``answer_bytes`` counts it (and a comma)."""
    return sum(answer_bytes(item) + 1 for item in items)


def _label(text: str) -> str:
    return shorten(text, MAX_LABEL_CHARS)


def _text(text: str) -> str:
    return shorten(text, MAX_MESSAGE_CHARS)


def _xpm_uuid(value: str | None) -> str | None:
    return shorten(value, MAX_XPM_UUID_CHARS) if value else None


def _web_url(value: str | None) -> str | None:
    return value if value and len(value) <= MAX_WEB_URL_CHARS else None


def entry_out(entry: Entry, *, firm_id: str, run_id: str) -> EntryOut:
    return EntryOut(
        firm_id=firm_id,
        run_id=run_id,
        severity=entry.severity,
        entity=entry.entity,
        xpm_uuid=_xpm_uuid(entry.xpm_uuid),
        label=_label(entry.label),
        code=entry.code,
        message=_text(entry.message),
        suggestion=_text(entry.suggestion),
    )


def _entries_out(run: SyncRun, entries: Iterable[Entry]) -> list[EntryOut]:
    return [entry_out(entry, firm_id=run.firm_id, run_id=run.run_id) for entry in entries]


def run_detail(run: SyncRun, entries: Iterable[Entry], entries_next_cursor: str | None) -> RunDetail:
    return RunDetail(
        **run_out(run).model_dump(),
        entries=_entries_out(run, entries),
        entries_next_cursor=entries_next_cursor,
    )


def entries_page(run: SyncRun, entries: Iterable[Entry], next_cursor: str | None) -> EntriesPage:
    return EntriesPage(entries=_entries_out(run, entries), next_cursor=next_cursor)


def problems_out(state: RecordState, *, code: str | None = None) -> list[ProblemOut]:
    """One item per open problem of the record (of ``code`` only, when the list is filtered by it)."""
    return [
        ProblemOut(
            code=problem.code,
            severity=problem.severity,
            entity=state.entity,
            xpm_uuid=_xpm_uuid(state.xpm_uuid) if state.entity != "run" else None,
            label=_label(state.label),
            message=_text(problem.message),
            suggestion=_text(problem.suggestion),
            first_seen=problem.first_seen,
            last_seen=problem.last_seen,
            runs=problem.runs,
            web_url=_web_url(state.web_url),
        )
        for problem in state.problems
        if code is None or problem.code == code
    ]


def summary_response(summary: ProblemSummary) -> ProblemSummaryResponse:
    return ProblemSummaryResponse(
        groups=[
            ProblemGroupOut(
                code=group.code,
                severity=group.severity,
                count=group.count,
                suggestion=_text(group.suggestion),
                examples=[_label(example) for example in group.examples],
            )
            for group in summary.groups
        ],
        open=summary.open,
        fixed_since_last_email=summary.fixed_since_last_email,
    )


def match_out(suggestion: Suggestion) -> MatchOut:
    # The XPM UUID and the client id are kept whole: the admin's answer names them.
    return MatchOut(
        xpm_uuid=suggestion.xpm_uuid,
        label=_label(suggestion.label),
        client_id=suggestion.client_id,
        client_label=_label(suggestion.client_label),
        reason=suggestion.reason,
        answer=suggestion.answer,
    )


def matches_page(suggestions: Iterable[Suggestion], next_cursor: str | None) -> MatchesPage:
    return MatchesPage(matches=[match_out(suggestion) for suggestion in suggestions], next_cursor=next_cursor)


def config_response(
    config: FirmConfig, *, default_partner_user_id: str | None, last_run: SyncRun | None
) -> ConfigResponse:
    connected_by = (
        ConnectedBy(name=config.connected_by_name, email=config.connected_by_email)
        if config.connected_by_name or config.connected_by_email
        else None
    )
    return ConfigResponse(
        firm_id=config.firm_id,
        status=config.connection,
        sync_name=config.sync_name,
        tenant_id=config.tenant_id,
        tenant_name=config.tenant_name,
        default_office_code=config.default_office_code,
        default_partner_user_id=default_partner_user_id,
        notification_user_id=config.notification_user_id,
        sync_enabled=config.sync_enabled,
        run_pending=config.run_pending,
        connected_by=connected_by,
        connected_at=config.connected_at,
        last_run=run_out(last_run) if last_run else None,
    )
