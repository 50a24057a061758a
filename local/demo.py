"""`make demo`: the hourly sync end to end on the embedded local stack.

moto server plays AWS, the project's simulator plays Xero and XPM over HTTP on loopback, and the
real handlers run: scheduled event -> dispatcher -> SQS FIFO -> worker. The admin connects (the
bound OAuth callback), submits the setup with Later and previews the first sync (a dry run: the
plan, and a trial client entered by hand with no code suggested as the same as an XPM client),
answers the suggestion, then presses Start Sync. Four runs follow: the first sync (the suggested
client linked, not duplicated), a rerun with nothing changed, a run after one client is renamed in
XPM and the missing partner is added in Active (its problems shown fixed), and a run after a client
is archived in XPM and typed in again with the same code (it takes its Active client back). Sync
Monitoring's summary of open problems is read after runs 1 and 3. Everything stops by itself.
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

import httpx

from local.admin_flow import run_admin_flow
from local.lambda_runtime import LocalContext, drain_queue, scheduled_event
from local.seed import user_item
from local.serve import DEMO_OFFICE_CODE, seed_demo_firm, serve_api
from local.stack import MotoServer, StackNames, create_resources, function_environment
from local.write_counts import items_written
from local.xpm_sim import Practice, SimClient, Simulator, generate_practice, start_simulator

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
    """Counts the items this process writes to the Active table (local.write_counts)."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self.count = 0

    def __call__(self, operation: str, params: dict[str, Any]) -> None:
        self.count += items_written(self.table_name, operation, params)


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
        # The practice's admin allows access: a member of its staff, so the connection has an owner
        # in XPM (SPEC A6: otherwise every run warns CONNECTION_OWNER_NOT_IN_XPM).
        owner = next(staff for staff in practice.partner_staff() if staff.email)
        sim.set_consenting_user(owner.name or "Practice Admin", owner.email or "")
        say(f"moto server (AWS)      {moto.url}")
        say(f"Xero/XPM simulator     {sim.url}")
        say(
            f"practice               {practice.tenant_name}: "
            f"{len(practice.staff)} staff, {len(practice.clients)} clients"
        )
        yield names, sim, practice


def deliver(names: StackNames, *, scheduled: bool) -> str:
    """Run what is queued (after a scheduled event, when asked) through the worker handler."""
    from xpm_sync.adapters import aws

    from functions.sync_dispatch.app import lambda_handler as dispatch
    from functions.sync_worker.app import lambda_handler as worker

    queued = ""
    if scheduled:
        answer = dispatch(scheduled_event(), LocalContext("SyncDispatchFunction"))
        queued = f"scheduled event: dispatcher queued {answer['queued']} firm(s); "
    deliveries = drain_queue(aws.client("sqs"), names.queue_url, worker)
    return f"{queued}worker ran {sum(len(d.bodies) for d in deliveries)} message(s)"


def report(
    run: dict[str, Any], entries: list[dict[str, Any]], *, writes: int, sim: Simulator, seconds: float
) -> None:
    """A run as the runs API returns it (B3/B5), printed for a person."""
    say(
        f"run {run['run_id']}  trigger={run['trigger']}  status={run['status'].upper()}  "
        f"full read={run.get('full_read')}"
    )
    say(f"{'':10}{'created':>9}{'updated':>9}{'unchanged':>11}{'failed':>8}{'skipped':>9}")
    for entity, label in (("user", "users"), ("client", "clients")):
        c = run["counts"][entity]
        say(
            f"{label:10}{c['created']:>9}{c['updated']:>9}{c['unchanged']:>11}{c['failed']:>8}{c['skipped']:>9}"
        )
    paths = Counter(_endpoint(call.path) for call in sim.calls_to("/practicemanager/"))
    say(f"XPM calls: {run['xpm_calls']} ({', '.join(f'{n} x {p}' for p, n in sorted(paths.items()))})")
    say(f"items written to the Active table: {writes}")
    say(f"time: {seconds:.2f}s")
    if not entries:
        return
    say(f"error log ({len(entries)} entries; the first of each code):")
    by_code = Counter(e["code"] for e in entries)
    shown: set[str] = set()
    for entry in entries:
        if entry["code"] in shown:
            continue
        shown.add(entry["code"])
        more = by_code[entry["code"]] - 1
        suffix = f"  (+{more} more like this)" if more else ""
        say(f"  [{entry['severity'].upper():7}] {entry['code']}: {entry['label']}{suffix}")
        say(f"            {entry['message']}")
        say(f"            -> {entry['suggestion']}")


class Runs:
    """Sync Monitoring, as the Active frontend reads it: through the API (SPEC B5)."""

    def __init__(self, http: httpx.Client, api_url: str) -> None:
        self._http = http
        self._api = f"{api_url}/integrations/xpm"
        self._base = f"{self._api}/runs"

    def latest(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        page = self._http.get(self._base, params={"limit": 1}).json()
        return self.run(page["runs"][0]["run_id"])

    def run(self, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        detail = self._http.get(f"{self._base}/{run_id}").json()
        return detail, detail["entries"]

    def summary(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._http.get(f"{self._api}/problems/summary").json()
        return answer

    def show_summary(self) -> None:
        summary = self.summary()
        say(
            f"GET /integrations/xpm/problems/summary -> {summary['open']} open problem(s), "
            f"{summary['fixed_since_last_email']} fixed since the last email"
        )
        for group in summary["groups"]:
            examples = ", ".join(group["examples"][:3])
            say(f"  {group['count']:>3} x {group['code']} [{group['severity']}]: {examples}")
            say(f"        -> {group['suggestion']}")


def sync_and_report(
    names: StackNames, runs: Runs, counter: WriteCounter, sim: Simulator, *, scheduled: bool
) -> dict[str, Any]:
    sim.reset_calls()
    counter.count = 0
    started = time.monotonic()
    say(deliver(names, scheduled=scheduled))
    seconds = time.monotonic() - started
    run, entries = runs.latest()
    report(run, entries, writes=counter.count, sim=sim, seconds=seconds)
    return {"run": run, "entries": entries, "writes": counter.count}


def sent_emails() -> list[Any]:
    """What SES sent, read back from moto (the server runs in this process)."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
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


def setup_through_the_api(api_url: str, http: httpx.Client) -> None:
    """The admin's setup page (SPEC A6): connect, consent at Xero, configure, then Later."""
    seen = run_admin_flow(api_url, http, sync_name="Harbour XPM sync", start_sync=False)
    authorize_url = seen["authorize_url"].split("?")[0]
    say(f"POST /integrations/xpm/connect        -> authorize_url {authorize_url} (PKCE S256)")
    # The code and state are one-time secrets: the demo names them, never prints them.
    setup_page = seen["setup_page"].split("?")[0]
    say(f"Xero sign-in and consent (simulator)  -> 302 to the setup page {setup_page}?code=...&state=...")
    say(f"POST /integrations/xpm/callback       -> 200, status {seen['connected']['status']} (as the admin)")
    config = seen["config"]
    connected_by = config.get("connected_by") or {}
    say(
        f"GET  /integrations/xpm                -> status {config['status']}, connected by "
        f"{connected_by.get('name')} <{connected_by.get('email')}>"
    )
    names = ", ".join(f"{t['tenant_name']}" for t in seen["tenants"])
    say(f"GET  /integrations/xpm/tenants        -> {names}")
    saved = seen["saved"]
    say(
        f"PUT  /integrations/xpm                -> tenant chosen, office {saved['default_office_code']}, "
        f"notify {saved['notification_user_id']} (Later: sync_enabled {saved['sync_enabled']})"
    )


def preview_and_answer(api_url: str, http: httpx.Client, names: StackNames, runs: Runs) -> None:
    """See before you sync (SPEC B6): a dry run of the first sync, and the admin's answer to the
    suggested link it found."""
    from xpm_sync.adapters import aws

    base = f"{api_url}/integrations/xpm"
    before = _active_items(aws.table(names.active_table))
    queued = http.post(f"{base}/preview")
    say(f"POST /integrations/xpm/preview        -> {queued.status_code} {queued.json()}")
    say(deliver(names, scheduled=False))
    plan, entries = runs.run(queued.json()["run_id"])
    clients, users = plan["counts"]["client"], plan["counts"]["user"]
    say(
        f"preview {plan['status'].upper()} (dry_run={plan['dry_run']}): clients would be "
        + ", ".join(
            f"{clients[o]} {o}" for o in ("created", "linked", "updated", "unchanged", "failed", "skipped")
        )
        + "; users "
        + ", ".join(
            f"{users[o]} {o}" for o in ("created", "linked", "updated", "unchanged", "failed", "skipped")
        )
    )
    codes = Counter(e["code"] for e in entries)
    say("its problems: " + ", ".join(f"{n} x {code}" for code, n in codes.most_common()))
    unchanged = _active_items(aws.table(names.active_table)) == before
    say(f"Active table unchanged by the preview: {'yes' if unchanged else 'NO'}")
    if not unchanged:
        raise RuntimeError("the preview wrote to Active")
    matches = http.get(f"{base}/matches").json()["matches"]
    for match in matches:
        say(
            f"GET  /integrations/xpm/matches        -> XPM {match['label']} may be Active "
            f"{match['client_label']} (same {match['reason']}), answer {match['answer'] or 'not given yet'}"
        )
        answered = http.post(
            f"{base}/matches/{match['xpm_uuid']}", json={"action": "link", "client_id": match["client_id"]}
        )
        say(f"POST /integrations/xpm/matches/{{uuid}} -> {answered.status_code} {answered.json()['answer']}")
    started = http.post(f"{base}/sync")
    say(f"POST /integrations/xpm/sync           -> {started.status_code} {started.json()}")
    again = http.post(f"{base}/sync")
    say(f"POST /integrations/xpm/sync (again)   -> {again.status_code} {again.json()}")


def _active_items(table: Any) -> list[dict[str, Any]]:
    return sorted(table.scan_items(), key=lambda item: (item["pk"], item["sk"]))


def seed_look_alike(active: Any, practice: Practice) -> tuple[SimClient, str]:
    """A trial client an admin typed in by hand with no code, named as an XPM client is (with the
    usual difference in punctuation): the first sync must not make a second one of it."""
    twin = next(
        c for c in practice.clients if c.code and c.account_manager_uuid and "Pty Ltd" in (c.name or "")
    )
    name = (twin.name or "").replace("Pty Ltd", "Pty. Limited")
    item = {
        "pk": f"FIRM#{FIRM_ID}",
        "sk": "CLIENT#trial-look-alike",
        "firm_id": FIRM_ID,
        "entity": "client",
        "client_id": "trial-look-alike",
        "legal_name": name,
        "office_code": DEMO_OFFICE_CODE,
        "notes": "entered during the trial, before XPM was connected",
    }
    active.put_item(Item=item)
    return twin, name


def main() -> int:
    from xpm_sync.observability import logger

    # The functions' JSON logs are for CloudWatch; here the demo tells the story itself.
    # POWERTOOLS_LOG_LEVEL=INFO make demo shows them too.
    logger.setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"))
    heading("xpm-sync demo: XPM staff and clients into Active")
    with local_stack() as (names, sim, practice):
        from xpm_sync.adapters import aws

        active = aws.table(names.active_table)
        counter = WriteCounter(names.active_table)
        active.client.meta.events.register("provide-client-params.dynamodb.*", _write_hook(counter))

        # One partner's staff record has a one-word name in XPM, so the sync cannot create them as
        # an Active user: their clients wait until an admin adds the partner in Active.
        absent_partner = practice.staff_member(practice.partners_without_active_user[0])
        practice.update_staff(absent_partner.uuid, Name=(absent_partner.name or "Partner").split()[0])
        seed_demo_firm(active, practice, FIRM_ID)
        firm = active.query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :client)",
            ExpressionAttributeValues={":pk": f"FIRM#{FIRM_ID}", ":client": "CLIENT#"},
        )["Items"][0]
        twin, look_alike = seed_look_alike(active, practice)
        say(
            f"Active seeded: office {DEMO_OFFICE_CODE}, the partners and an admin as users, "
            f"trial client {firm['code']} entered by hand, and {look_alike!r} with no code"
        )

        env = {key: os.environ[key] for key in function_environment(names, xero_url=sim.url)}
        with serve_api(port=0, env=env, firm_id=FIRM_ID) as api, httpx.Client(timeout=30) as http:
            runs = Runs(http, api.url)

            heading("Setup through the API, as the admin's setup page drives it")
            setup_through_the_api(api.url, http)

            heading("See before you sync: a preview, and a suggested link answered")
            preview_and_answer(api.url, http, names, runs)

            heading("Run 1: the manual run Start Sync queued (first sync, full read)")
            sync_and_report(names, runs, counter, sim, scheduled=False)
            show_email(0)
            trial = active.get_item(Key={"pk": f"FIRM#{FIRM_ID}", "sk": firm["sk"]})["Item"]
            say(
                f"trial client {trial['code']}: linked to XPM {trial.get('xpm_uuid')}; "
                f"Active-only note kept: {trial.get('notes')!r}"
            )
            linked = active.get_item(Key={"pk": f"FIRM#{FIRM_ID}", "sk": "CLIENT#trial-look-alike"})["Item"]
            copies = [c for c in _active_items(active) if c.get("xpm_uuid") == twin.uuid]
            say(
                f"{look_alike!r}: linked to XPM {twin.code} ({linked.get('code')}), "
                f"{len(copies)} Active client for it: suggested, answered, never duplicated"
            )
            runs.show_summary()

            heading("Run 2: the hourly schedule, nothing changed in XPM")
            before = len(sent_emails())
            second = sync_and_report(names, runs, counter, sim, scheduled=True)
            show_email(before)

            heading("Run 3: one client renamed in XPM, the missing partner added in Active")
            renamed = next(c for c in practice.clients if c.code == trial["code"])
            practice.update_client(renamed.uuid, Name=f"{renamed.name} (renamed)")
            say(f"XPM: client {renamed.code} renamed to {renamed.name!r}")
            active.put_item(
                Item=user_item(
                    FIRM_ID,
                    email=absent_partner.email or "",
                    first_name=absent_partner.name or "Partner",
                    last_name="Partner",
                    role="partner",
                    office_code=DEMO_OFFICE_CODE,
                )
            )
            say(f"Active: partner user {absent_partner.email} added by an admin")
            third = sync_and_report(names, runs, counter, sim, scheduled=True)
            runs.show_summary()

            heading("Run 4: a client archived in XPM and typed in again with the same code")
            gone = next(c for c in practice.clients if _synced_and_plain(c, practice, trial["code"]))
            holder = next(c for c in _active_items(active) if c.get("xpm_uuid") == gone.uuid)
            recreated = practice.recreate_client(gone.uuid)
            say(f"XPM: {gone.name} ({gone.code}) archived, and typed in again as XPM client {recreated.uuid}")
            sync_and_report(names, runs, counter, sim, scheduled=True)
            holders = [
                c for c in _active_items(active) if c.get("entity") == "client" and c.get("code") == gone.code
            ]
            same = [c["client_id"] for c in holders] == [holder["client_id"]]
            say(
                f"Active clients with code {gone.code}: {len(holders)}, "
                f"{'the same record' if same else 'NOT the same record'} {holder['client_id']}, "
                f"now linked to {holders[0].get('xpm_uuid') if holders else None}"
            )

        heading("Summary")
        say(f"run 2 wrote {second['writes']} item(s) to Active; run 3 wrote {third['writes']}")
    say("local stack stopped; nothing left running")
    return 0


def _synced_and_plain(client: SimClient, practice: Practice, trial_code: str) -> bool:
    """A client run 1 synced cleanly: a code, a partner who is an Active user, not the trial one."""
    partners = {staff.uuid for staff in practice.partner_staff()}
    return bool(client.code) and client.code != trial_code and client.account_manager_uuid in partners


def _endpoint(path: str) -> str:
    """``/practicemanager/3.1/client.api/get/<uuid>`` -> ``client.api/get``."""
    api, _, rest = path.split("/3.1/", 1)[-1].partition("/")
    return f"{api}/{rest.split('/', 1)[0]}"


def _write_hook(counter: WriteCounter) -> Any:
    def hook(params: dict[str, Any], model: Any, **_: Any) -> None:
        counter(model.name, params)

    return hook


if __name__ == "__main__":
    sys.exit(main())
