"""Who may take which client code in one run (SPEC A4): the ledger alone, no Active, no XPM."""

from __future__ import annotations

from xpm_sync.domain.code_ledger import ClientCodeLedger, code_key


def test_codes_compare_trimmed_and_in_any_case() -> None:
    assert code_key(" acme01 ") == code_key("ACME01")


def test_the_first_client_to_claim_a_code_keeps_it_and_a_later_one_is_told_who() -> None:
    ledger: ClientCodeLedger[str] = ClientCodeLedger()

    assert ledger.claim("u1", "ACME", "Acme (ACME)") is None
    assert ledger.claim("u2", "acme", "Other (acme)") == "Acme (ACME)"
    assert ledger.claim("u1", "ACME", "Acme (ACME)") is None, "a record sent again keeps its claim"


def test_a_released_claim_lets_a_later_client_take_the_code() -> None:
    ledger: ClientCodeLedger[str] = ClientCodeLedger()
    ledger.claim("u1", "ACME", "First")

    ledger.release("u1", "ACME")

    assert ledger.claim("u2", "ACME", "Second") is None


def test_a_holder_the_first_claimant_waits_for_that_keeps_the_code_wins_it() -> None:
    # u1 (first in the list) wants ACME, which u2 still holds in Active; u2 comes later and keeps it.
    ledger: ClientCodeLedger[str] = ClientCodeLedger()
    ledger.claim("u1", "ACME", "Mover")
    ledger.wait("u1", "record-1", holder_uuid="u2")

    assert ledger.claim("u2", "ACME", "Holder") is None
    assert ledger.claim("u1", "ACME", "Mover") == "Holder"


def test_waiters_come_back_in_the_order_they_came_and_stop_waiting() -> None:
    ledger: ClientCodeLedger[str] = ClientCodeLedger()
    ledger.wait("u1", "first", holder_uuid="h")
    ledger.wait("u2", "second", holder_uuid="h")

    assert ledger.waiters_of("h") == [("u1", "first"), ("u2", "second")]
    assert not ledger.is_waiting("u1")
    assert ledger.waiting_uuids == set()


def test_a_record_sent_again_no_longer_waits() -> None:
    ledger: ClientCodeLedger[str] = ClientCodeLedger()
    ledger.wait("u1", "first", holder_uuid="h")

    ledger.unwait("u1")

    assert ledger.waiters_of("h") == []


def test_a_holder_not_applied_yet_or_itself_waiting_may_still_give_its_code_up() -> None:
    ledger: ClientCodeLedger[str] = ClientCodeLedger()
    assert ledger.must_wait_for("h")
    ledger.seen("h", "H1")
    assert not ledger.must_wait_for("h")
    ledger.wait("h", "holder", holder_uuid="other")
    assert ledger.must_wait_for("h")


def test_clients_waiting_for_each_others_codes_are_found_as_a_ring() -> None:
    ledger: ClientCodeLedger[str] = ClientCodeLedger()
    ledger.wait("a", "A", holder_uuid="b")
    ledger.wait("b", "B", holder_uuid="c")
    ledger.wait("c", "C", holder_uuid="a")
    ledger.wait("d", "D", holder_uuid="a")  # waits on the ring, but is no part of it

    (ring,) = ledger.rings()

    assert sorted(uuid for uuid, _ in ring) == ["a", "b", "c"]


def test_a_chain_is_no_ring() -> None:
    ledger: ClientCodeLedger[str] = ClientCodeLedger()
    ledger.wait("a", "A", holder_uuid="b")
    ledger.wait("b", "B", holder_uuid="c")

    assert ledger.rings() == []
    assert ledger.take_any_waiters() in ([("a", "A")], [("b", "B")])


def test_a_client_xpm_sent_with_another_code_or_none_has_left_the_code() -> None:
    ledger: ClientCodeLedger[str] = ClientCodeLedger()
    ledger.seen("moved", "NEW01")
    ledger.seen("stayed", "old01")
    ledger.seen("emptied", None)

    assert ledger.seen_with_another_code("moved", "OLD01")
    assert not ledger.seen_with_another_code("stayed", "OLD01")  # the same code, case aside
    assert ledger.seen_with_another_code("emptied", "OLD01")
    assert not ledger.seen_with_another_code("not-sent", "OLD01")  # not in this run: unknown
