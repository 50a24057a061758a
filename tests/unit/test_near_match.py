"""SPEC B6: names are compared with case, punctuation and spacing aside, and "Pty Ltd" /
"Pty. Limited" alike."""

from __future__ import annotations

import pytest
from xpm_sync.domain import near_match
from xpm_sync.domain.active_records import StoredClient
from xpm_sync.domain.near_match import UnlinkedClients, name_key


@pytest.mark.parametrize(
    ("xpm", "active"),
    [
        ("Harbour & Sons Pty. Limited", "harbour and sons pty ltd"),
        ("Acme Proprietary Limited", "ACME PTY LTD"),
        ("A.B. Plumbing Pty Ltd", "AB Plumbing Pty. Limited"),
        ("O'Brien Accounting", "OBrien Accounting"),
        ("Smith-Jones Trust", "SmithJones Trust"),
        ("Acme Holdings", "AcmeHoldings"),
        ("  Acme   Holdings  ", "acme holdings"),
        ("Kelly & Co", "Kelly and Company"),
        ("Acme Pty.Limited", "Acme Pty Ltd"),
        ("Smith-and-Jones", "Smith & Jones"),
        ("Smith/Company", "Smith Co"),
    ],
)
def test_names_alike_but_for_case_punctuation_spacing_and_the_suffix_match(xpm: str, active: str) -> None:
    assert name_key(xpm) == name_key(active) != ""


@pytest.mark.parametrize(
    ("xpm", "active"),
    [("Acme Holdings", "Acme Holding"), ("Smith Trust", "Smyth Trust"), ("Acme Pty Ltd", "Acme Ltd")],
)
def test_different_names_do_not_match(xpm: str, active: str) -> None:
    assert name_key(xpm) != name_key(active)


def test_no_name_matches_nothing() -> None:
    assert name_key(None) == name_key("") == name_key(" .- ") == ""


# --- where look-alikes are found: the unlinked Active clients, by ABN and by name ---------------


def _unlinked(client_id: str, name: str | None, abn: str | None = None) -> StoredClient:
    synced: dict[str, object] = {"code": f"C-{client_id}"}
    if name is not None:
        synced["legal_name"] = name
    if abn is not None:
        synced["abn"] = abn
    return StoredClient(client_id, synced)


def test_the_same_abn_wins_over_the_same_name_and_of_several_the_lowest_client_id() -> None:
    unlinked = UnlinkedClients(
        [
            _unlinked("c-3", "Acme Pty Ltd"),
            _unlinked("c-2", "Other Name", abn="51 824 753 556"),
            _unlinked("c-1", "ACME PTY. LIMITED"),
            _unlinked("c-4", "Third", abn="51824753556"),
        ]
    )

    by_abn = unlinked.find(abn="51824753556", name="Acme Pty Ltd")
    by_name = unlinked.find(abn=None, name="acme pty ltd")

    assert by_abn is not None
    assert (by_abn[0].client_id, by_abn[1]) == ("c-2", "abn")
    assert by_name is not None
    assert (by_name[0].client_id, by_name[1]) == ("c-1", "name")
    assert unlinked.find(abn="00000000000", name="Nobody") is None
    assert unlinked.find(abn=None, name="") is None


def test_a_client_linked_renamed_or_gone_is_found_as_it_is_now() -> None:
    unlinked = UnlinkedClients(
        [_unlinked("c-1", "Acme Pty Ltd", abn="51824753556"), _unlinked("c-2", "Acme")]
    )

    unlinked.pop("c-1")  # linked by the run
    unlinked["c-2"] = _unlinked("c-2", "Renamed Co")  # read again: renamed in Active

    assert unlinked.find(abn="51824753556", name="Acme Pty Ltd") is None
    assert unlinked.find(abn=None, name="Acme") is None
    found = unlinked.find(abn=None, name="renamed company")
    assert found is not None
    assert found[0].client_id == "c-2"
    assert "c-1" not in unlinked
    assert len(unlinked) == 1
    with pytest.raises(KeyError):
        del unlinked["c-1"]


def test_a_lookup_reads_no_other_unlinked_client(monkeypatch: pytest.MonkeyPatch) -> None:
    # The probe of 2026-12-07 (night): each lookup compared the name with every unlinked client's,
    # so a firm whose 8,000 clients waited on suggested links took 71 s an hour in memory (4x for
    # each doubling; about 45 minutes at 50,000)
    unlinked = UnlinkedClients(_unlinked(f"c-{n:05d}", f"Trial Client {n} Pty Ltd") for n in range(5_000))
    names_compared: list[str | None] = []

    def counted(name: str | None) -> str:
        names_compared.append(name)
        return name_key(name)

    monkeypatch.setattr(near_match, "name_key", counted)

    found = unlinked.find(abn=None, name="Trial Client 4321 Pty Ltd")

    assert found is not None
    assert found[0].client_id == "c-04321"
    assert names_compared == ["Trial Client 4321 Pty Ltd"]
