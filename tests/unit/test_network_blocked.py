"""The unit tests' guard against the network (tests/unit/conftest.py) holds."""

from __future__ import annotations

import socket

import pytest

from tests.unit.conftest import NetworkBlocked


def test_a_unit_test_cannot_reach_another_machine() -> None:
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("93.184.216.34", 443), timeout=1)
    with pytest.raises(NetworkBlocked):
        socket.getaddrinfo("example.com", 443)


def test_loopback_stays_open_for_the_simulator_and_moto() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=1):
            pass
