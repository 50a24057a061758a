"""Who may take which client code during one run (SPEC A4): pure bookkeeping, no I/O.

Client codes identify clients in both systems, and Active never holds two clients with one code,
not even between two writes. Within one XPM answer:

- **First claim.** Two XPM clients with the same code: the first in XPM's order keeps it, every
  later one is an error naming it (``claim``). A client that cannot take its code releases its
  claim, so that the holder, when XPM lists it later, still syncs (``release``).
- **Waiting.** A client whose new code another XPM client still holds in Active waits until that
  holder has been applied in the same run: a firm renumbering its codes moves many at once, and a
  holder further down the list may give the code up (``wait``, ``waiters_of``). A chain of moves
  settles in list order.
- **Rings.** Clients that wait for one another's codes in a ring (codes swapped in XPM) can only
  take them all at once, in one transaction (``rings``); when that is refused they fail on the
  conflict (``swap_refused``).

The ledger keeps the waiting records themselves (of any type) and hands them back; the sync
(``xpm_sync.sync.clients``) decides what a record does and writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

Waiter = TypeVar("Waiter")


def code_key(code: str) -> str:
    """The form in which client codes are compared: trimmed, any case."""
    return code.strip().casefold()


@dataclass
class ClientCodeLedger(Generic[Waiter]):
    # code_key -> (uuid, label) of the first XPM client of this run to claim the code.
    _first_claims: dict[str, tuple[str, str]] = field(default_factory=dict)
    # holder uuid -> the records waiting for it to give its code up, in the order they came.
    _waiting: dict[str, list[tuple[str, Waiter]]] = field(default_factory=dict)
    # waiter uuid -> the holder it waits for.
    _holder_of: dict[str, str] = field(default_factory=dict)
    # uuid -> the code_key XPM sent it with in this run ("" for none).
    _seen: dict[str, str] = field(default_factory=dict)
    # ... of those, the ones XPM sent neither archived nor deleted.
    _seen_live: set[str] = field(default_factory=set)
    _swaps_refused: set[str] = field(default_factory=set)

    # --- first claims ----------------------------------------------------------------------------

    def claim(self, uuid: str, code: str, label: str) -> str | None:
        """Claim ``code`` for ``uuid``: None when it holds the first claim, else the label of the
        earlier client that keeps it (the duplicate-code rule)."""
        key = code_key(code)
        first_uuid, first_label = self._first_claims.setdefault(key, (uuid, label))
        if first_uuid != uuid and self._holder_of.get(first_uuid) == uuid:
            # The first claimant waits for this client to give the code up, and it does not.
            self._first_claims[key] = first_uuid, first_label = uuid, label
        return None if first_uuid == uuid else first_label

    def release(self, uuid: str, code: str) -> None:
        """``uuid`` cannot take ``code``: it must not keep later clients of the list from it."""
        key = code_key(code)
        if self._first_claims.get(key, ("", ""))[0] == uuid:
            del self._first_claims[key]

    def holds_first_claim(self, uuid: str, code: str) -> bool:
        return self._first_claims.get(code_key(code), ("", ""))[0] == uuid

    # --- what this run has applied ---------------------------------------------------------------

    def seen(self, uuid: str, code: str | None, *, live: bool = True) -> None:
        self._seen[uuid] = code_key(code) if code else ""
        if live:
            self._seen_live.add(uuid)
        else:
            self._seen_live.discard(uuid)

    def was_seen(self, uuid: str) -> bool:
        return uuid in self._seen

    def seen_live(self, uuid: str) -> bool:
        """XPM sent ``uuid`` in this run, neither archived nor deleted: whatever its Active client
        still says, it is no client XPM archived or deleted (SPEC A4's re-creation needs one)."""
        return uuid in self._seen_live

    def seen_with_another_code(self, uuid: str, code: str) -> bool:
        """XPM sent ``uuid`` in this run with a code other than ``code`` (or none): whatever its
        Active client still holds, XPM itself has no duplicate of ``code`` in it."""
        return uuid in self._seen and self._seen[uuid] != code_key(code)

    def must_wait_for(self, holder_uuid: str) -> bool:
        """A holder yet to be applied in this run (or itself waiting) may still give its code up."""
        return holder_uuid not in self._seen or holder_uuid in self._holder_of

    # --- waiting -----------------------------------------------------------------------------------

    def wait(self, uuid: str, record: Waiter, holder_uuid: str) -> None:
        self._waiting.setdefault(holder_uuid, []).append((uuid, record))
        self._holder_of[uuid] = holder_uuid

    def is_waiting(self, uuid: str) -> bool:
        return uuid in self._holder_of

    @property
    def waiting_uuids(self) -> set[str]:
        return set(self._holder_of)

    def unwait(self, uuid: str) -> None:
        """``uuid`` waits no more (XPM sent it again, or it is applied now)."""
        holder = self._holder_of.pop(uuid, None)
        if holder is None:
            return
        waiters = [(waiter, record) for waiter, record in self._waiting[holder] if waiter != uuid]
        if waiters:
            self._waiting[holder] = waiters
        else:
            del self._waiting[holder]

    def waiters_of(self, holder_uuid: str) -> list[tuple[str, Waiter]]:
        """Take the records that waited for ``holder_uuid``, in the order they came."""
        waiters = self._waiting.pop(holder_uuid, [])
        for uuid, _ in waiters:
            del self._holder_of[uuid]
        return waiters

    def take_any_waiters(self) -> list[tuple[str, Waiter]]:
        """Take the waiters of one holder, any: for settling what is left when the list ends."""
        if not self._waiting:
            return []
        holder = next(iter(self._waiting))
        return self.waiters_of(holder)

    # --- rings -------------------------------------------------------------------------------------

    def rings(self) -> list[list[tuple[str, Waiter]]]:
        """Waiting clients each of which waits for the next one's code, the last for the first's."""
        records = {uuid: record for waiters in self._waiting.values() for uuid, record in waiters}
        rings: list[list[tuple[str, Waiter]]] = []
        done: set[str] = set()
        for start in records:
            path: list[str] = []
            uuid: str | None = start
            while uuid is not None and uuid not in done and uuid not in path:
                path.append(uuid)
                uuid = self._holder_of.get(uuid)
            if uuid is not None and uuid in path:
                rings.append([(member, records[member]) for member in path[path.index(uuid) :]])
            done.update(path)
        return rings

    def swap_refused(self, uuids: list[str]) -> None:
        self._swaps_refused.update(uuids)

    def was_swap_refused(self, uuid: str) -> bool:
        return uuid in self._swaps_refused
