"""SPEC B5 (issues 19 item 4, 21): every answer stays under 1 MB whatever the firm's size, and every
list pages with an opaque cursor the server verifies.

Given firms with logs past Lambda's 6 MB, thousands of open problems and hundreds of suggested
links, each field as long as the sync lets it be and in characters that cost the most bytes; when
an admin pages through them;
then each page is under 1 MB and the pages together give every item once. Given a cursor that was
forged, edited, or handed out to another firm or for another list; then every list route answers
400 INVALID_CURSOR.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from xpm_sync.adapters import aws
from xpm_sync.adapters.sync_log import RunLog
from xpm_sync.api.models import MAX_WEB_URL_CHARS
from xpm_sync.domain.entries import ABN_INVALID, MAX_LABEL_CHARS, MAX_MESSAGE_CHARS, PARTNER_NOT_IN_ACTIVE
from xpm_sync.domain.runs import SyncRun

from tests.fixtures.api import FIRM, OTHER_FIRM, Answer, ApiHarness, admin_claims, every_page
from tests.fixtures.monitoring import NOW, problem, record_state, suggest, write_states

ONE_MB = 1_000_000
# Each costs 12 bytes in the JSON the API writes (an escaped surrogate pair): the worst case.
WIDE = "\U0001f600"
LONG_LABEL = WIDE * MAX_LABEL_CHARS
LONG_MESSAGE = WIDE * MAX_MESSAGE_CHARS
# The longest link a problem keeps, and one longer.
LONG_WEB_URL = "https://practicemanager.xero.com/Client/" + WIDE * (MAX_WEB_URL_CHARS - 40)
TOO_LONG_WEB_URL = LONG_WEB_URL + "/x"

pytestmark = pytest.mark.usefixtures("read_the_day_after")


# As many open problems as one client can have at once.
FIVE_CODES = (
    "PARTNER_MISSING",
    "ABN_INVALID",
    "MANAGER_NOT_IN_ACTIVE",
    "BUSINESS_STRUCTURE_UNKNOWN",
    "CLIENT_RELINKED",
)


def _run(firm_id: str, n: int = 0) -> SyncRun:
    return SyncRun(
        firm_id=firm_id,
        run_id=f"20260302T09{n:02d}00000000Z-{n:08x}",
        trigger="schedule",
        status="partial",
        started_at=f"2026-03-02T09:{n:02d}:00Z",
        finished_at=f"2026-03-02T09:{n:02d}:30Z",
    )


def _log_run(api: ApiHarness, firm_id: str, errors: int, warnings: int, *, wide: bool, n: int = 0) -> SyncRun:
    """A run whose log holds ``errors`` then ``warnings`` entries (labels numbered, so their order
    shows); with ``wide``, every label and message as long and as costly as the sync lets it be."""
    label, message = (LONG_LABEL, LONG_MESSAGE) if wide else ("", "Partner missing")
    found = [
        PARTNER_NOT_IN_ACTIVE.entry(label=f"E{i:05d} {label}", message=message, xpm_uuid=f"u-{i}")
        for i in range(errors)
    ] + [
        ABN_INVALID.entry(label=f"W{i:05d} {label}", message=message, xpm_uuid=f"w-{i}")
        for i in range(warnings)
    ]
    run = _run(firm_id, n)
    log = RunLog(aws.table(api.names.sync_log_table))
    run.entry_count = log.add_entries(run, found, NOW)
    log.save_run(run, NOW)
    return run


def _size(answer: Answer) -> int:
    return len(answer.text.encode("utf-8"))


def _page_through(
    call: Callable[[str | None], Answer], items: str
) -> tuple[list[dict[str, object]], list[int]]:
    """Every item of a list, page by page from the start, and each page's size in bytes."""
    pages = every_page(lambda query: call(query.get("cursor")))
    return [item for page in pages for item in page.json[items]], [_size(page) for page in pages]


def _path_call(
    api: ApiHarness, case: str, path: str, parameters: dict[str, str], firm_id: str = FIRM
) -> Callable[[str | None], Answer]:
    def call(cursor: str | None) -> Answer:
        return api.call_api(
            case,
            path=path,
            path_parameters=parameters,
            query={"cursor": cursor} if cursor else None,
            claims=admin_claims(firm_id),
        )

    return call


def _call(api: ApiHarness, case: str, firm_id: str = FIRM) -> Callable[[str | None], Answer]:
    def call(cursor: str | None) -> Answer:
        return api.call_api(case, query={"cursor": cursor} if cursor else None, claims=admin_claims(firm_id))

    return call


# --- Under 1 MB, whatever the firm's size ----------------------------------------------------------


def test_a_run_whose_longest_entries_pass_lambdas_6_mb_answers_under_1_mb_and_pages_to_the_end(
    api: ApiHarness,
) -> None:
    # 600 of the longest entries: more than Lambda's 6 MB in one answer, as the route once gave.
    run = _log_run(api, FIRM, errors=350, warnings=250, wide=True)
    entries_path = f"/integrations/xpm/runs/{run.run_id}/entries"

    detail = api.call_api(
        "get_run", path=f"/integrations/xpm/runs/{run.run_id}", path_parameters={"run_id": run.run_id}
    )
    seen, sizes = _page_through(
        _path_call(api, "get_run_entries", entries_path, {"run_id": run.run_id}), "entries"
    )

    assert detail.status == 200
    assert _size(detail) < ONE_MB
    assert 0 < len(detail.json["entries"]) <= 100
    assert detail.json["entries_next_cursor"] is not None
    assert max(sizes) < ONE_MB
    assert sum(sizes) > 6_000_000, "the log would not have passed Lambda's limit in one answer"
    labels = [str(entry["label"])[:6] for entry in seen]
    assert labels == [f"E{i:05d}" for i in range(350)] + [f"W{i:05d}" for i in range(250)]
    assert seen[0]["label"] == f"E00000 {LONG_LABEL}"[: MAX_LABEL_CHARS - 1] + "…", "cut as the entry was"


def test_over_a_thousand_ordinary_entries_come_100_a_page(api: ApiHarness) -> None:
    run = _log_run(api, FIRM, errors=800, warnings=250, wide=False)
    path = f"/integrations/xpm/runs/{run.run_id}/entries"

    seen, sizes = _page_through(_path_call(api, "get_run_entries", path, {"run_id": run.run_id}), "entries")

    assert len(sizes) == 11
    assert len(seen) == 1050
    assert len({str(entry["label"])[:6] for entry in seen}) == 1050
    assert max(sizes) < 100_000


def test_thousands_of_open_problems_the_longest_among_them_answer_under_1_mb_a_page_to_the_end(
    api: ApiHarness,
) -> None:
    ordinary_link = "https://practicemanager.xero.com/Client/1/Detail"
    links = [LONG_WEB_URL, TOO_LONG_WEB_URL] + [ordinary_link] * 8
    longest = [
        record_state(
            "client",
            f"c-{n:05d}-" + "f" * 200,
            f"Client {n:05d} {LONG_LABEL}",
            problem("PARTNER_NOT_IN_ACTIVE", message=LONG_MESSAGE),
            problem("ABN_INVALID", message=LONG_MESSAGE),
            problem("MANAGER_NOT_IN_ACTIVE", message=LONG_MESSAGE),
            web_url=links[n % len(links)],
        )
        for n in range(50)
    ]
    ordinary = [
        record_state("client", f"c-{n:05d}", f"Client {n:05d}", *(problem(code) for code in FIVE_CODES))
        for n in range(50, 450)
    ]
    write_states(api.names, FIRM, longest + ordinary)

    seen, sizes = _page_through(_call(api, "get_problems"), "problems")
    summary = api.call_api("get_problems_summary")

    assert max(sizes) < ONE_MB
    # 100 records a page would be 5 pages: the longest records' bytes split pages further.
    assert len(sizes) > 5, "the longest problems came fewer to a page"
    pairs = [(str(p["xpm_uuid"])[:7], p["code"]) for p in seen]
    assert len(pairs) == len(set(pairs)) == 50 * 3 + 400 * 5, "every (record, code) pair once"
    # A link longer than any XPM sends is left out rather than cut into one that leads nowhere.
    assert {p.get("web_url") for p in seen} == {LONG_WEB_URL, None, ordinary_link}
    assert summary.status == 200
    assert _size(summary) < ONE_MB
    assert summary.json["open"] == 2150


def test_hundreds_of_the_longest_suggested_links_answer_under_1_mb_a_page_to_the_end(api: ApiHarness) -> None:
    for n in range(600):
        suggest(
            api.names,
            FIRM,
            f"x-{n:05d}-" + "a" * 900,
            f"c-{n:05d}",
            label=f"XPM {n:05d} {LONG_LABEL}",
            client_label=LONG_LABEL * 3,
        )

    seen, sizes = _page_through(_call(api, "get_matches"), "matches")

    assert max(sizes) < ONE_MB
    assert [str(m["xpm_uuid"])[:7] for m in seen] == [f"x-{n:05d}" for n in range(600)]
    assert all(len(str(m["client_label"])) <= MAX_LABEL_CHARS for m in seen)


# --- Every list's cursor is verified ------------------------------------------------------------


@dataclass(frozen=True)
class ListRoute:
    """One list route: how to call it for a firm, and what its items are called."""

    name: str
    items: str
    call: Callable[[ApiHarness, str, str | None], Answer]


def _runs(api: ApiHarness, firm_id: str, cursor: str | None) -> Answer:
    query = {"limit": "1"} | ({"cursor": cursor} if cursor else {})
    return api.call_api("get_runs", query=query, claims=admin_claims(firm_id))


def _entries(api: ApiHarness, firm_id: str, cursor: str | None) -> Answer:
    run_id = _run(firm_id).run_id
    return _path_call(
        api, "get_run_entries", f"/integrations/xpm/runs/{run_id}/entries", {"run_id": run_id}, firm_id
    )(cursor)


def _problems(api: ApiHarness, firm_id: str, cursor: str | None) -> Answer:
    return _call(api, "get_problems", firm_id)(cursor)


def _matches(api: ApiHarness, firm_id: str, cursor: str | None) -> Answer:
    return _call(api, "get_matches", firm_id)(cursor)


LIST_ROUTES = [
    ListRoute("runs", "runs", _runs),
    ListRoute("entries", "entries", _entries),
    ListRoute("problems", "problems", _problems),
    ListRoute("matches", "matches", _matches),
]


@pytest.fixture
def two_firms(api: ApiHarness) -> ApiHarness:
    """Two firms, each with more than a page of every list: runs, a run's entries (the same run id
    in both firms), open problems and suggested links."""
    for firm_id in (FIRM, OTHER_FIRM):
        _log_run(api, firm_id, errors=101, warnings=0, wide=False)
        RunLog(aws.table(api.names.sync_log_table)).save_run(_run(firm_id, 1), NOW)
        write_states(
            api.names,
            firm_id,
            [
                record_state("client", f"c-{n:04d}", f"Client {n}", problem("PARTNER_MISSING"))
                for n in range(101)
            ],
        )
        for n in range(101):
            suggest(api.names, firm_id, f"x-{n:04d}", f"c-{n:04d}")
    return api


def _next_cursor(api: ApiHarness, route: ListRoute, firm_id: str = FIRM) -> str:
    answer = route.call(api, firm_id, None)
    assert answer.status == 200, answer.text
    cursor = answer.json["next_cursor"]
    assert isinstance(cursor, str)
    return cursor


def _edited(cursor: str) -> str:
    """The cursor with the position it names moved, its signature kept."""
    body, signature = cursor.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    decoded["after"] = decoded["after"][:-1] + ("0" if decoded["after"][-1] != "0" else "1")
    edited = base64.urlsafe_b64encode(json.dumps(decoded, sort_keys=True, separators=(",", ":")).encode())
    return f"{edited.decode().rstrip('=')}.{signature}"


def _assert_invalid_cursor(answer: Answer) -> None:
    assert answer.status == 400, answer.text[:300]
    assert answer.json == {
        "error": {"code": "INVALID_CURSOR", "message": "cursor is not one this API handed out."}
    }


@pytest.mark.parametrize("route", LIST_ROUTES, ids=lambda route: route.name)
def test_a_list_pages_on_with_its_own_cursor(two_firms: ApiHarness, route: ListRoute) -> None:
    answer = route.call(two_firms, FIRM, _next_cursor(two_firms, route))

    assert answer.status == 200
    assert len(answer.json[route.items]) == 1


FORGERIES: dict[str, Callable[[str], str]] = {
    "garbage": lambda cursor: "garbage",
    "unsigned": lambda cursor: "eyJhZnRlciI6IDF9",
    "too long": lambda cursor: "x" * 2000,
    "signature changed": lambda cursor: cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB"),
    "position changed": _edited,
}


@pytest.mark.parametrize("route", LIST_ROUTES, ids=lambda route: route.name)
def test_a_forged_cursor_is_400_on_every_list_route(two_firms: ApiHarness, route: ListRoute) -> None:
    # One firm's lists, then every kind of forgery of a cursor they handed out (one setup, since
    # seeding two firms' lists is most of the time).
    cursor = _next_cursor(two_firms, route)

    for kind, forge in FORGERIES.items():
        answer = route.call(two_firms, FIRM, forge(cursor))
        assert answer.status == 400, f"{kind}: {answer.text[:300]}"
        _assert_invalid_cursor(answer)


@pytest.mark.parametrize("route", LIST_ROUTES, ids=lambda route: route.name)
def test_another_firms_cursor_is_400_on_every_list_route(two_firms: ApiHarness, route: ListRoute) -> None:
    theirs = _next_cursor(two_firms, route, OTHER_FIRM)

    _assert_invalid_cursor(route.call(two_firms, FIRM, theirs))


@pytest.mark.parametrize("route", LIST_ROUTES, ids=lambda route: route.name)
def test_a_cursor_of_another_list_is_400_on_every_list_route(two_firms: ApiHarness, route: ListRoute) -> None:
    for other in LIST_ROUTES:
        if other is not route:
            _assert_invalid_cursor(route.call(two_firms, FIRM, _next_cursor(two_firms, other)))
