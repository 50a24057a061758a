"""SPEC B6: names are compared with case, punctuation and spacing aside, and "Pty Ltd" /
"Pty. Limited" alike."""

from __future__ import annotations

import pytest
from xpm_sync.domain.near_match import name_key


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
