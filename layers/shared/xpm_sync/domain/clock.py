"""Time, injectable: the domain never calls ``datetime.now`` directly."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 UTC with a ``Z``, to the second, as stored in the sync log."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_precise(moment: datetime) -> str:
    """ISO 8601 UTC to the microsecond, for the moments that divide what one email told from what
    the next will (a problem opened or closed, an email sent): two runs can fall in one second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def latest(*moments: str | None) -> str | None:
    """The latest of these ISO 8601 moments; None when none is given."""
    given = [moment for moment in moments if moment]
    return max(given, key=parse_iso) if given else None
