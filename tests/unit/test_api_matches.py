"""SPEC B5 / B6 (issue 22 item 2): suggested links wait for the admin's answer, which later runs apply.

Given XPM clients the sync would not create because an unlinked Active client looks like them;
when the admin lists the suggestions and answers one (link to an Active client, or create); then
the answer is kept and the next run applies it, a client that is not an unlinked client of the
firm is refused, and a firm sees and answers only its own suggestions.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import boto3
import pytest
from xpm_sync.adapters import aws
from xpm_sync.adapters.sync_log import Matches

from functions.sync_worker.app import lambda_handler as worker_handler
from local.lambda_runtime import drain_queue
from local.seed import seed_active_firm
from local.xpm_sim import SimClient
from tests.fixtures.api import FIRM, OTHER_FIRM, Answer, ApiHarness, admin_claims, every_page
from tests.fixtures.monitoring import seed_client, suggest


def _matches(api: ApiHarness, firm_id: str = FIRM, **query: str) -> Answer:
    return api.call_api("get_matches", query=query or None, claims=admin_claims(firm_id))


def _answer(api: ApiHarness, xpm_uuid: str, body: Any, firm_id: str = FIRM) -> Answer:
    return api.call_api(
        "post_match",
        path=f"/integrations/xpm/matches/{xpm_uuid}",
        path_parameters={"xpm_uuid": xpm_uuid},
        body=body,
        claims=admin_claims(firm_id),
    )


def _stored(api: ApiHarness, xpm_uuid: str, firm_id: str = FIRM) -> Any:
    """The suggestion as the engine reads it at the next run."""
    return Matches(aws.table(api.names.sync_log_table), firm_id).load().get(xpm_uuid)


@pytest.fixture
def suggested(api: ApiHarness) -> ApiHarness:
    """Firm A: XPM client x-1 looks like trial client c-1 (same name), x-2 like c-2 (same ABN);
    c-3 is another unlinked client, c-linked is linked to XPM. Firm B: x-9 and its client c-9."""
    seed_client(api.names, FIRM, "c-1", legal_name="Acme Pty Ltd")
    seed_client(api.names, FIRM, "c-2", legal_name="Bravo Holdings", abn="51824753556")
    seed_client(api.names, FIRM, "c-3", legal_name="Charlie", code="CHA01")
    seed_client(api.names, FIRM, "c-linked", legal_name="Delta", code="DEL01", xpm_uuid="x-delta")
    suggest(api.names, FIRM, "x-1", "c-1", label="Acme Pty. Limited (ACME01)", client_label="Acme Pty Ltd")
    suggest(api.names, FIRM, "x-2", "c-2", label="Bravo (BRA01)", client_label="Bravo Holdings", reason="abn")
    seed_client(api.names, OTHER_FIRM, "c-9", legal_name="Theirs")
    suggest(api.names, OTHER_FIRM, "x-9", "c-9", label="Theirs (T9)", client_label="Theirs")
    return api


def test_the_suggested_links_are_listed_awaiting_an_answer(suggested: ApiHarness) -> None:
    answer = _matches(suggested)

    assert answer.status == 200
    assert answer.json == {
        "matches": [
            {
                "xpm_uuid": "x-1",
                "label": "Acme Pty. Limited (ACME01)",
                "client_id": "c-1",
                "client_label": "Acme Pty Ltd",
                "reason": "name",
                "answer": None,
            },
            {
                "xpm_uuid": "x-2",
                "label": "Bravo (BRA01)",
                "client_id": "c-2",
                "client_label": "Bravo Holdings",
                "reason": "abn",
                "answer": None,
            },
        ],
        "next_cursor": None,
    }


def test_a_firm_sees_only_its_own_suggested_links(suggested: ApiHarness) -> None:
    theirs = _matches(suggested, OTHER_FIRM).json["matches"]

    assert [m["xpm_uuid"] for m in theirs] == ["x-9"]


def test_suggested_links_page_to_the_end(api: ApiHarness) -> None:
    for n in range(230):
        suggest(api.names, FIRM, f"x-{n:04d}", f"c-{n:04d}")

    pages = every_page(lambda query: _matches(api, **query))

    assert len(pages) == 3
    assert [m["xpm_uuid"] for page in pages for m in page.json["matches"]] == [
        f"x-{n:04d}" for n in range(230)
    ]


def test_link_to_the_suggested_client_is_kept_for_the_next_run(suggested: ApiHarness) -> None:
    answer = _answer(suggested, "x-1", {"action": "link", "client_id": "c-1"})

    assert answer.status == 200, answer.text
    assert answer.json == {
        "xpm_uuid": "x-1",
        "label": "Acme Pty. Limited (ACME01)",
        "client_id": "c-1",
        "client_label": "Acme Pty Ltd",
        "reason": "name",
        "answer": "link",
    }
    stored = _stored(suggested, "x-1")
    assert (stored.answer, stored.client_id) == ("link", "c-1")
    assert _matches(suggested).json["matches"][0]["answer"] == "link"


def test_link_to_another_unlinked_client_of_the_firm_names_that_client(suggested: ApiHarness) -> None:
    answer = _answer(suggested, "x-1", {"action": "link", "client_id": "c-3"})

    assert answer.status == 200, answer.text
    assert (answer.json["client_id"], answer.json["client_label"]) == ("c-3", "Charlie (CHA01)")
    stored = _stored(suggested, "x-1")
    assert (stored.answer, stored.client_id, stored.client_label) == ("link", "c-3", "Charlie (CHA01)")


def test_create_is_kept_and_leaves_the_suggested_client_alone(suggested: ApiHarness) -> None:
    answer = _answer(suggested, "x-2", {"action": "create"})

    assert answer.status == 200, answer.text
    assert (answer.json["answer"], answer.json["client_id"]) == ("create", "c-2")
    assert _stored(suggested, "x-2").answer == "create"
    assert _stored(suggested, "x-1").answer is None, "the other suggestion still waits"


def test_an_answer_can_be_changed_until_a_run_applies_it(suggested: ApiHarness) -> None:
    _answer(suggested, "x-1", {"action": "link", "client_id": "c-1"})

    answer = _answer(suggested, "x-1", {"action": "create"})

    assert answer.json["answer"] == "create"
    assert _stored(suggested, "x-1").answer == "create"


def test_create_after_linking_another_client_shows_the_suggestion_as_the_run_made_it(
    suggested: ApiHarness,
) -> None:
    """The probe of 2026-12-07 (evening): the other client stayed on the match, with a reason it
    does not share."""
    _answer(suggested, "x-1", {"action": "link", "client_id": "c-3"})

    answer = _answer(suggested, "x-1", {"action": "create"})

    assert answer.status == 200, answer.text
    assert (answer.json["client_id"], answer.json["client_label"]) == ("c-1", "Acme Pty Ltd")
    assert answer.json["reason"] == "name"
    listed = next(m for m in _matches(suggested).json["matches"] if m["xpm_uuid"] == "x-1")
    assert (listed["client_id"], listed["answer"]) == ("c-1", "create")
    again = _answer(suggested, "x-1", {"action": "link", "client_id": "c-3"})
    assert again.json["client_id"] == "c-3"
    assert _answer(suggested, "x-1", {"action": "link", "client_id": "c-1"}).json["client_id"] == "c-1"
    assert _stored(suggested, "x-1").suggested_client_id is None


@pytest.mark.parametrize("xpm_uuid", ["x-unknown", "x-9", "x" * 1100])
def test_a_uuid_with_no_suggestion_of_the_firm_is_404(suggested: ApiHarness, xpm_uuid: str) -> None:
    answer = _answer(suggested, xpm_uuid, {"action": "create"})

    assert answer.status == 404
    assert answer.json["error"]["code"] == "NOT_FOUND"
    assert _stored(suggested, "x-9", OTHER_FIRM).answer is None, "another firm's suggestion is untouched"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "merge", "client_id": "c-1"}, "action"),
        ({"action": "LINK", "client_id": "c-1"}, "action"),
        ({"client_id": "c-1"}, "action"),
        ({"action": "link"}, "client_id"),
        ({"action": "link", "client_id": None}, "client_id"),
        ({"action": "link", "client_id": 7}, "client_id"),
        ({"action": "link", "client_id": "c-nowhere"}, "client_id"),
        ({"action": "link", "client_id": "c-linked"}, "client_id"),
        ({"action": "link", "client_id": "c-9"}, "client_id"),
    ],
    ids=[
        "another action",
        "an action in capitals",
        "no action",
        "link without a client",
        "link to null",
        "a client id that is no string",
        "a client the firm does not have",
        "a client already linked to XPM",
        "another firm's client",
    ],
)
def test_another_action_or_a_client_that_is_not_an_unlinked_client_of_the_firm_is_422(
    suggested: ApiHarness, body: dict[str, Any], field: str
) -> None:
    answer = _answer(suggested, "x-1", body)

    assert answer.status == 422, answer.text
    assert answer.json["error"]["code"] == "INVALID_FIELD"
    assert answer.json["error"]["field"] == field
    assert _stored(suggested, "x-1").answer is None, "nothing was kept"


def test_a_body_that_is_not_json_is_400(suggested: ApiHarness) -> None:
    answer = _answer(suggested, "x-1", "{link")

    assert answer.status == 400
    assert answer.json["error"]["code"] == "INVALID_JSON"


@pytest.mark.parametrize("xpm_uuid", ["with space", "a+b", "ä-uuid", "a#b", "a/b", "100%"])
@pytest.mark.parametrize("decoded", [True, False], ids=["with path parameters", "path only"])
def test_a_uuid_percent_encoded_in_the_path_answers_the_suggestion_listed(
    api: ApiHarness, xpm_uuid: str, decoded: bool
) -> None:
    """The probe of 2026-12-07 (evening): the route read the uuid from the path as sent, still
    percent-encoded, and answered 404 for a suggestion the list names."""
    # Given a suggestion whose uuid a URL must percent-encode
    seed_client(api.names, FIRM, "c-1", legal_name="Acme Pty Ltd")
    suggest(api.names, FIRM, xpm_uuid, "c-1")
    listed = [m["xpm_uuid"] for m in _matches(api).json["matches"]]

    # When the admin answers it: API Gateway sends the path encoded and the path parameters decoded
    # (a hand-built event may carry the path alone)
    answer = api.call_api(
        "post_match",
        path=f"/integrations/xpm/matches/{quote(xpm_uuid, safe='')}",
        path_parameters={"xpm_uuid": xpm_uuid} if decoded else None,
        body={"action": "create"},
    )

    # Then the answer is the suggestion listed, and kept for the next run
    assert listed == [xpm_uuid]
    assert answer.status == 200, answer.text
    assert (answer.json["xpm_uuid"], answer.json["answer"]) == (xpm_uuid, "create")
    assert _stored(api, xpm_uuid).answer == "create"


# --- The answer holds for later runs: the worker applies it ---------------------------------------


def _clean_client(api: ApiHarness, partner_ids: dict[str, str]) -> SimClient:
    """A client of the practice that syncs cleanly: no planted problem, a partner in Active."""
    practice = api.sim.practices[0]
    planted = {uuid for uuids in practice.problems.values() for uuid in uuids}
    return next(
        c
        for c in practice.clients
        if c.code and c.name and c.uuid not in planted and c.account_manager_uuid in partner_ids
    )


def _sync_now(api: ApiHarness) -> None:
    """Start Sync, and the worker runs what it queued."""
    api.clock.advance(6 * 60)  # past Start Sync's 5 minutes
    answer = api.call_api("post_sync")
    assert answer.status == 202, answer.text
    drain_queue(aws.client("sqs"), api.names.queue_url, worker_handler)


def test_a_near_match_waits_for_the_admin_and_the_next_run_links_as_answered(api: ApiHarness) -> None:
    seeded = seed_active_firm(
        boto3.resource("dynamodb").Table(api.names.active_table),
        FIRM,
        api.sim.practices[0],
        office_code="MEL",
        hand_made_client=False,
    )
    xpm_client = _clean_client(api, seeded.partner_user_ids)
    assert xpm_client.name is not None
    seed_client(api.names, FIRM, "trial-1", legal_name=xpm_client.name.upper(), office_code="MEL")
    api.connect()
    api.seed_user("user-admin-1")
    saved = api.call_api("put_config", body=api.setup_body("MEL"))
    assert saved.status == 200, saved.text

    _sync_now(api)
    waiting = {m["xpm_uuid"]: m for m in _matches(api).json["matches"]}
    trial = api.active("CLIENT#trial-1")
    assert waiting[xpm_client.uuid]["client_id"] == "trial-1"
    assert "xpm_uuid" not in trial, "a suggestion never links by itself"

    answered = _answer(api, xpm_client.uuid, {"action": "link", "client_id": "trial-1"})
    _sync_now(api)

    assert answered.status == 200, answered.text
    linked = api.active("CLIENT#trial-1")
    assert (linked.get("xpm_uuid"), linked.get("code")) == (xpm_client.uuid, xpm_client.code)
    same_code = [
        item
        for item in boto3.resource("dynamodb").Table(api.names.active_table).scan()["Items"]
        if item.get("code") == xpm_client.code
    ]
    assert len(same_code) == 1, "linked, never duplicated"
