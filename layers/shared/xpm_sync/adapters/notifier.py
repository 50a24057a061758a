"""The failure email (SPEC A5): when a run fails or is partial, the firm's notification user hears
about it through SES, at most once per firm per 24 hours. The email summarises the firm's open
problems (``domain.problem_summary``), read from the record states the engine has just written.

The 24-hour allowance is one item per firm in the notify table (SPEC B3). DynamoDB deletes expired
items late (up to days after ``expires_at``), so a claim succeeds when no item exists *or* the stored
expiry has passed: the check never relies on the item being gone. The claim is a single
conditional write, so when two workers race, DynamoDB lets exactly one of them through.

A notification never breaks a run: every problem here is logged, and a missing or unusable
notification user becomes a run entry the admin sees in Sync Monitoring.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from xpm_sync.adapters.active_table import ActiveRepository
from xpm_sync.adapters.dynamodb import Table, is_condition_failure
from xpm_sync.adapters.metrics import record_notification
from xpm_sync.adapters.sync_log import RecordStates
from xpm_sync.domain import entries as codes
from xpm_sync.domain.clock import Clock
from xpm_sync.domain.entries import Entry
from xpm_sync.domain.firm import FirmConfig
from xpm_sync.domain.notification import RenderedEmail, monitoring_url, render_email
from xpm_sync.domain.problem_summary import summarise_problems
from xpm_sync.domain.runs import SyncRun
from xpm_sync.observability import logger

ALLOWANCE_WINDOW = timedelta(hours=24)
# A send whose request reached SES but whose answer did not: whether SES sent it is unknown.
_SENT_MAYBE = (ReadTimeoutError, ConnectionClosedError)

NotifyOutcome = Literal[
    "sent",  # the email went out and holds the firm's allowance for 24 hours
    "not_needed",  # the run succeeded (or is still running): nothing to tell
    "suppressed",  # the firm was already emailed within the last 24 hours
    "no_recipient",  # no usable notification user: recorded as a run entry instead
    "send_failed",  # SES refused or failed; the allowance was given back
    "error",  # something else went wrong (e.g. DynamoDB); logged, the allowance (if taken) given
    # back, the run carries on
]

# Addresses Active would accept for sign-in; anything else would only bounce at SES.
_EMAIL = re.compile(r"^[^@\s<>\",;]+@[^@\s<>\",;]+\.[^@\s<>\",;]+$")


@dataclass(frozen=True)
class Claim:
    """The allowance one worker holds: enough to give back exactly this claim and no newer one."""

    firm_id: str
    expires_at: int
    claim_id: str


class NotifyAllowance:
    """The once-a-day allowance per firm, in the notify table."""

    def __init__(self, table: Table, clock: Clock, *, window: timedelta = ALLOWANCE_WINDOW) -> None:
        self._table = table
        self._clock = clock
        self._window = window

    def try_acquire(self, firm_id: str) -> Claim | None:
        """The claim when this caller may email the firm now; None when the allowance is taken."""
        now = self._clock.now()
        claim = Claim(
            firm_id=firm_id,
            expires_at=int((now + self._window).timestamp()),
            claim_id=secrets.token_hex(8),
        )
        try:
            self._table.put_item(
                Item={
                    "firm_id": firm_id,
                    "expires_at": claim.expires_at,
                    "claim_id": claim.claim_id,
                    "claimed_at": int(now.timestamp()),
                },
                ConditionExpression="attribute_not_exists(firm_id) OR expires_at < :now",
                ExpressionAttributeValues={":now": int(now.timestamp())},
            )
        except ClientError as error:
            if is_condition_failure(error):
                return None
            raise
        return claim

    def release(self, claim: Claim) -> None:
        """Give the allowance back after a failed send.

        The delete is conditional on this claim's id, so a release that arrives after another
        worker's newer claim (ours expired meanwhile) leaves that claim alone.
        """
        try:
            self._table.delete_item(
                Key={"firm_id": claim.firm_id},
                ConditionExpression="claim_id = :claim_id AND expires_at = :expires_at",
                ExpressionAttributeValues={":claim_id": claim.claim_id, ":expires_at": claim.expires_at},
            )
        except ClientError as error:
            if not is_condition_failure(error):
                raise


@dataclass(frozen=True)
class NotifyResult:
    """What happened, for the caller's log, and entries to append to the run's error log."""

    outcome: NotifyOutcome
    entries: list[Entry] = field(default_factory=list)


class _NoRecipient(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Notifier:
    """The engine's notifier: emails the notification user about a failed or partial run that the
    policy (``domain.notification.should_notify``) says is worth it.

    Takes the Active repository of a firm (to find the notification user), its record states (what
    the email summarises), the notify table and an SES client. Returns a :class:`NotifyResult`; its
    ``entries`` belong in the run's error log. It never raises.
    """

    def __init__(
        self,
        *,
        active_for: Callable[[str], ActiveRepository],
        states_for: Callable[[str], RecordStates],
        notify_table: Table,
        ses_client: Any,
        from_email: str,
        frontend_url: str,
        clock: Clock,
    ) -> None:
        self._active_for = active_for
        self._states_for = states_for
        self._allowance = NotifyAllowance(notify_table, clock)
        self._ses = ses_client
        self._from_email = from_email
        self._frontend_url = frontend_url

    def __call__(self, run: SyncRun, entries: list[Entry], config: FirmConfig) -> NotifyResult:
        log = {"firm_id": run.firm_id, "run_id": run.run_id, "status": run.status}
        try:
            result = self._notify(run, entries, config)
        except Exception:  # a lost email must not fail (and so re-run) the sync
            logger.exception("failure notification not sent", extra=log)
            result = NotifyResult("error")
        else:
            logger.info("failure notification", extra={**log, "outcome": result.outcome})
        # An email that did not go is an operator's concern (SES refusing the sender, say): the
        # firm's admin cannot see what never arrived.
        record_notification(result.outcome, run.firm_id, run.run_id)
        return result

    def reaches_recipient(self, config: FirmConfig) -> bool:
        """Whether the notification user could be emailed now: a run with nothing to tell checks
        this to close a NOTIFICATION_USER_INVALID the admin has fixed. False when Active cannot be
        read (logged): the problem then stays as it was, unjudged."""
        try:
            self._recipient(config)
        except _NoRecipient:
            return False
        except Exception:
            logger.exception("notification user not looked up", extra={"firm_id": config.firm_id})
            return False
        return True

    def _notify(self, run: SyncRun, entries: list[Entry], config: FirmConfig) -> NotifyResult:
        if run.status not in ("failed", "partial"):
            return NotifyResult("not_needed")
        try:
            recipient = self._recipient(config)
        except _NoRecipient as problem:
            logger.warning(
                "notification user invalid",
                extra={"firm_id": config.firm_id, "notification_user_id": config.notification_user_id},
            )
            entry = codes.NOTIFICATION_USER_INVALID.entry(label="Notification user", message=problem.message)
            return NotifyResult("no_recipient", [entry])
        # The allowance first: a firm already emailed today (most runs of a firm with problems)
        # costs one conditional write, not a read of every open problem.
        claim = self._allowance.try_acquire(config.firm_id)
        if claim is None:
            return NotifyResult("suppressed")
        try:
            email = self._compose(run, entries, config)
        except Exception:  # an email we could not write is not sent, so it uses up nothing
            logger.exception("failure notification not composed", extra={"firm_id": config.firm_id})
            self._allowance.release(claim)
            return NotifyResult("error")
        try:
            self._send(recipient, email)
        except _SENT_MAYBE:
            # SES had the request and no answer came back: it may have sent the email, so the
            # allowance stays used (SPEC A5: at most one email in 24 hours), and the SDK does not
            # send it again (composition: no retries on SES).
            logger.exception(
                "SES may have sent the failure notification; its allowance is kept",
                extra={"firm_id": config.firm_id},
            )
            return NotifyResult("send_failed")
        except Exception:  # a send SES refused, or that never reached it, gives the allowance back
            logger.exception("SES did not send the failure notification", extra={"firm_id": config.firm_id})
            self._allowance.release(claim)
            return NotifyResult("send_failed")
        return NotifyResult("sent")

    def _compose(self, run: SyncRun, entries: list[Entry], config: FirmConfig) -> RenderedEmail:
        """The email, from one read of the firm's open problems and of those fixed since the last
        email (the engine saved this run's states before calling, so they include its findings)."""
        states = self._states_for(config.firm_id)
        summary = summarise_problems(
            states.every_open(),
            states.fixed_after(config.last_notified_at),
            last_emailed_at=config.last_notified_at,
            # The email reaches the notification user: that problem is moot in it (the run
            # closes it once the email is sent).
            hidden={codes.NOTIFICATION_USER_INVALID.code},
        )
        return render_email(
            run,
            entries,
            config,
            summary,
            firm_name=config.tenant_name or config.firm_id,
            monitoring_url=monitoring_url(self._frontend_url, run.run_id),
        )

    def _recipient(self, config: FirmConfig) -> str:
        user_id = config.notification_user_id
        if not user_id:
            raise _NoRecipient("No notification user is chosen for this integration.")
        item = self._active_for(config.firm_id).user(user_id)
        if item is None:
            raise _NoRecipient(f"The notification user {user_id} no longer exists in Active.")
        email = str(item.get("email") or "").strip()
        if not _EMAIL.match(email):
            raise _NoRecipient(f"The notification user {user_id} has no valid email address in Active.")
        return email

    def _send(self, recipient: str, email: RenderedEmail) -> None:
        self._ses.send_email(
            Source=self._from_email,
            Destination={"ToAddresses": [recipient]},
            Message={
                "Subject": {"Data": email.subject, "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": email.text, "Charset": "UTF-8"},
                    "Html": {"Data": email.html, "Charset": "UTF-8"},
                },
            },
        )
