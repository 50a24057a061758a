"""The layer's requirements.txt is generated from pyproject.toml (one source of dependencies)."""

from __future__ import annotations

from scripts.requirements import HEADER, REQUIREMENTS, main, render


def test_layer_requirements_are_current_with_pyproject():
    # When this fails, run `make requirements` and commit the result.
    assert REQUIREMENTS.read_text(encoding="utf-8") == render()


def test_check_mode_agrees():
    assert main(["--check"]) == 0


def test_the_file_says_it_is_generated():
    assert render().startswith(HEADER)
    assert "do not edit" in HEADER


def test_check_fails_on_a_stale_file_and_write_repairs_it(tmp_path, monkeypatch):
    import scripts.requirements as requirements

    stale = tmp_path / "requirements.txt"
    stale.write_text("httpx==0.0.1\n", encoding="utf-8")
    monkeypatch.setattr(requirements, "REQUIREMENTS", stale)

    assert requirements.main(["--check"]) == 1
    assert requirements.main(["--write"]) == 0
    assert requirements.main(["--check"]) == 0
