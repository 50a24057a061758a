"""The API's request and response bodies (SPEC B5), distinct from the stored models.

Requests are validated by Powertools against these models (422 naming the field); responses are
built from stored models by the explicit mapping functions at the bottom, so nothing stored (and
never a token) reaches a response by accident.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from xpm_sync.domain.entries import Entry, EntryEntity, Severity
from xpm_sync.domain.firm import ConnectionStatus, FirmConfig
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
XeroErrorCode = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=256)]


class CallbackRequest(_Request):
    """What Xero put on the setup page's URL (``{FRONTEND_URL}/admin/integrations/xpm/callback``),
    posted by that page as the signed-in admin: ``code`` and ``state``, or ``error`` and ``state``."""

    state: str = Field(description="The state of the authorize URL, as Xero sent it back.")
    code: AuthorizationCode | None = Field(default=None, description="Xero's authorization code.")
    error: XeroErrorCode | None = Field(
        default=None, description="Xero's error instead of a code (access_denied: the admin refused)."
    )


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
    entries: list[EntryOut]


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


def counts_out(counts: dict[str, dict[str, int]]) -> dict[str, Counts]:
    return {entity: Counts.model_validate(outcomes) for entity, outcomes in counts.items()}


def run_out(run: SyncRun) -> RunOut:
    return RunOut(
        firm_id=run.firm_id,
        run_id=run.run_id,
        trigger=run.trigger,
        status=run.status,
        started_at=run.started_at,
        finished_at=run.finished_at,
        counts=counts_out(run.counts),
        xpm_calls=run.xpm_calls,
        full_read=run.full_read,
        entry_count=run.entry_count,
    )


def entry_out(entry: Entry, *, firm_id: str, run_id: str) -> EntryOut:
    return EntryOut(
        firm_id=firm_id,
        run_id=run_id,
        severity=entry.severity,
        entity=entry.entity,
        xpm_uuid=entry.xpm_uuid,
        label=entry.label,
        code=entry.code,
        message=entry.message,
        suggestion=entry.suggestion,
    )


def run_detail(run: SyncRun, entries: list[Entry]) -> RunDetail:
    return RunDetail(
        **run_out(run).model_dump(),
        entries=[entry_out(entry, firm_id=run.firm_id, run_id=run.run_id) for entry in entries],
    )


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
