"""The layer's requirements.txt is generated from pyproject.toml (one source of dependencies)."""

from __future__ import annotations

from scripts.requirements import (
    CONSTRAINTS,
    HEADER,
    LOCK,
    REQUIREMENTS,
    main,
    render,
    render_constraints,
)


def test_layer_requirements_are_current_with_pyproject():
    # When this fails, run `make requirements` and commit the result.
    assert REQUIREMENTS.read_text(encoding="utf-8") == render()


def test_layer_constraints_pin_every_package_as_the_lock_does():
    assert CONSTRAINTS.read_text(encoding="utf-8") == render_constraints()
    pins = {
        line.split("==")[0].lower().replace("_", "-"): line
        for line in render_constraints().splitlines()
        if "==" in line
    }
    assert pins["botocore"] in LOCK.read_text(encoding="utf-8").splitlines()
    assert pins["pydantic-core"] in LOCK.read_text(encoding="utf-8").splitlines()  # must match pydantic


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
    monkeypatch.setattr(requirements, "CONSTRAINTS", tmp_path / "constraints.txt")  # missing: stale too

    assert requirements.main(["--check"]) == 1
    assert requirements.main(["--write"]) == 0
    assert requirements.main(["--check"]) == 0
