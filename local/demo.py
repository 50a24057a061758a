"""`make demo`: the hourly sync end to end on the embedded local stack.

moto server plays AWS, the project's simulator plays Xero and XPM over HTTP on loopback, and the
real handlers run: scheduled event -> dispatcher -> SQS FIFO -> worker. Three runs: the first
sync, a rerun with nothing changed, and a run after one client is renamed in XPM and one partner
is added in Active. Everything stops by itself at the end.
"""

from __future__ import annotations

import html
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from local.lambda_runtime import LocalContext, drain_queue, scheduled_event
from local.seed import seed_active_firm, seed_connection, user_item
from local.stack import MotoServer, StackNames, create_resources, function_environment
from local.xpm_sim import Practice, Simulator, generate_practice, start_simulator

FIRM_ID = "firm-demo"
APP_CLIENT_ID = "local-client-id"
APP_CLIENT_SECRET = "local-client-secret"  # noqa: S105 - the simulator's demo app, not a secret
WIDTH = 78


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say()
    say(f"== {text} " + "=" * max(0, WIDTH - len(text) - 4))


class WriteCounter:
    """Counts DynamoDB write requests made to the Active table by this process."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self.count = 0

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        if params.get("TableName") == self.table_name:
            self.count += 1


@contextmanager
def local_stack() -> Iterator[tuple[StackNames, Simulator, Practice]]:
    with ExitStack() as stack:
        moto = stack.enter_context(MotoServer())
        sim = start_simulator()
        stack.callback(sim.stop)
        os.environ.update(
            AWS_ENDPOINT_URL=moto.url,
            AWS_ACCESS_KEY_ID="local",
            AWS_SECRET_ACCESS_KEY="local",  # noqa: S106 - moto accepts any credentials
            AWS_DEFAULT_REGION="ap-southeast-2",
            POWERTOOLS_TRACE_DISABLED="true",
            POWERTOOLS_LOG_LEVEL=os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
            POWERTOOLS_METRICS_DISABLED="true",
        )
        names = create_resources(
            endpoint_url=moto.url, app_client_id=APP_CLIENT_ID, app_client_secret=APP_CLIENT_SECRET
        )
        os.environ.update(function_environment(names, xero_url=sim.url))
        sim.register_app(APP_CLIENT_ID, APP_CLIENT_SECRET)
        practice = generate_practice(
            42, staff=12, clients=60, problem_share=0.15, tenant_name="Harbour & Co Accountants"
        )
        sim.add_practice(practice)
        sim.set_consenting_user("Pat Practice", "pat@harbour.example")
        say(f"moto server (AWS)      {moto.url}")
        say(f"Xero/XPM simulator     {sim.url}")
        say(
            f"practice               {practice.tenant_name}: "
            f"{len(practice.staff)} staff, {len(practice.clients)} clients"
        )
        yield names, sim, practice


def run_hourly(names: StackNames, counter: WriteCounter, sim: Simulator) -> dict[str, Any]:
    from xpm_sync import aws
    from xpm_sync.runs import RunLog

    from functions.sync_dispatch.app import lambda_handler as dispatch
    from functions.sync_worker.app import lambda_handler as worker

    sim.reset_calls()
    counter.count = 0
    started = time.monotonic()
    queued = dispatch(scheduled_event(), LocalContext("SyncDispatchFunction"))["queued"]
    deliveries = drain_queue(aws.client("sqs"), names.queue_url, worker)
    seconds = time.monotonic() - started
    log = RunLog(aws.table(names.sync_log_table))
    run = log.list_runs(FIRM_ID, limit=1)[0][0]
    entries = log.entries(FIRM_ID, run.run_id)
    say(f"dispatcher queued {queued} firm(s); worker ran {sum(len(d.bodies) for d in deliveries)} message(s)")
    say(f"run {run.run_id}  trigger={run.trigger}  status={run.status.upper()}  full read={run.full_read}")
    say(f"{'':10}{'created':>9}{'updated':>9}{'unchanged':>11}{'failed':>8}{'skipped':>9}")
    for entity, label in (("user", "users"), ("client", "clients")):
        c = run.counts[entity]
        say(
            f"{label:10}{c['created']:>9}{c['updated']:>9}{c['unchanged']:>11}{c['failed']:>8}{c['skipped']:>9}"
        )
    paths = Counter(_endpoint(call.path) for call in sim.calls_to("/practicemanager/"))
    say(f"XPM calls: {run.xpm_calls} ({', '.join(f'{n} x {p}' for p, n in sorted(paths.items()))})")
    say(f"DynamoDB writes to the Active table: {counter.count}")
    say(f"time: {seconds:.2f}s")
    if entries:
        say(f"error log ({len(entries)} entries):")
        by_code = Counter(e.code for e in entries)
        shown: set[str] = set()
        for entry in entries:
            if entry.code in shown:
                continue
            shown.add(entry.code)
            more = by_code[entry.code] - 1
            suffix = f"  (+{more} more like this)" if more else ""
            say(f"  [{entry.severity.upper():7}] {entry.code}: {entry.label}{suffix}")
            say(f"            {entry.message}")
            say(f"            -> {entry.suggestion}")
    return {"run": run, "entries": entries, "writes": counter.count}


def sent_emails() -> list[Any]:
    """What SES sent, read back from moto (the server runs in this process)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return list(ses_backends[DEFAULT_ACCOUNT_ID]["ap-southeast-2"].sent_messages)


def show_email(before: int) -> None:
    emails = sent_emails()
    if len(emails) == before:
        say("notification: no email this run (one per firm per 24 hours, and one went already)")
        return
    for email in emails[before:]:
        say(f"notification email sent through SES to {', '.join(email.destinations['ToAddresses'])}")
        say(f"  subject: {email.subject}")
        blocks = re.sub(r"(?i)<(br|/p|/li|/tr|/h[1-6]|/div)[^>]*>", "\n", email.body)
        text = re.sub(r"<[^>]+>", " ", blocks)
        lines = [" ".join(line.split()) for line in html.unescape(text).splitlines()]
        for line in [line for line in lines if line][:16]:
            say(f"  | {line[: WIDTH - 4]}")


def main() -> int:
    heading("xpm-sync demo: XPM staff and clients into Active")
    with local_stack() as (names, sim, practice):
        from xpm_sync import aws

        active = aws.table(names.active_table)
        counter = WriteCounter(names.active_table)
        active.meta.client.meta.events.register("provide-client-params.dynamodb.*", _write_hook(counter))

        # One partner's staff record has a one-word name in XPM, so the sync cannot create them as
        # an Active user: their clients wait until an admin adds the partner in Active.
        absent_partner = practice.staff_member(practice.partners_without_active_user[0])
        practice.update_staff(absent_partner.uuid, Name=(absent_partner.name or "Partner").split()[0])
        firm = seed_active_firm(active, FIRM_ID, practice)
        seed_connection(
            aws.table(names.config_table),
            aws.client("secretsmanager"),
            firm_id=FIRM_ID,
            tenant_id=practice.tenant_id,
            tokens=sim.issue_tokens(APP_CLIENT_ID),
            token_secret_prefix=names.token_secret_prefix,
            office_code=firm.office_code,
            notification_user_id=firm.admin_user_id,
            tenant_name=practice.tenant_name,
        )
        say(
            f"Active seeded: office {firm.office_code}, {len(firm.partner_user_ids)} partners as users, "
            f"trial client {firm.hand_made_client_code} entered by hand"
        )

        heading("Run 1: first sync (full read)")
        run_hourly(names, counter, sim)
        show_email(0)
        trial = active.get_item(Key={"pk": f"FIRM#{FIRM_ID}", "sk": f"CLIENT#{firm.hand_made_client_id}"})[
            "Item"
        ]
        say(
            f"trial client {trial['code']}: linked to XPM {trial.get('xpm_uuid')}; "
            f"Active-only note kept: {trial.get('notes')!r}"
        )

        heading("Run 2: nothing changed in XPM")
        second = run_hourly(names, counter, sim)
        show_email(len(sent_emails()))

        heading("Run 3: one client renamed in XPM, the missing partner added in Active")
        renamed = next(c for c in practice.clients if c.code == firm.hand_made_client_code)
        practice.update_client(renamed.uuid, Name=f"{renamed.name} (renamed)")
        say(f"XPM: client {renamed.code} renamed to {renamed.name!r}")
        partner = user_item(
            FIRM_ID,
            email=absent_partner.email or "",
            first_name=absent_partner.name or "Partner",
            last_name="Partner",
            role="partner",
            office_code=firm.office_code,
        )
        active.put_item(Item=partner)
        say(f"Active: partner user {absent_partner.email} added by an admin")
        counter.count = 0
        third = run_hourly(names, counter, sim)

        heading("Summary")
        say(f"run 2 wrote {second['writes']} item(s) to Active; run 3 wrote {third['writes']}")
    say("local stack stopped; nothing left running")
    return 0


def _endpoint(path: str) -> str:
    """``/practicemanager/3.1/client.api/get/<uuid>`` -> ``client.api/get``."""
    api, _, rest = path.split("/3.1/", 1)[-1].partition("/")
    return f"{api}/{rest.split('/', 1)[0]}"


def _write_hook(counter: WriteCounter) -> Any:
    writes = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}

    def hook(params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in writes:
            counter(params)

    return hook


if __name__ == "__main__":
    sys.exit(main())
