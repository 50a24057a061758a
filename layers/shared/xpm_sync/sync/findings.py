"""What one run found, as it goes: the error log's entries in the order met, and per record what
it reported (for the record states, SPEC B6)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from xpm_sync.domain.entries import MAX_LABEL_CHARS, Entry, EntryEntity, shorten
from xpm_sync.domain.problems import Sighting, record_key


@dataclass
class RunFindings:
    entries: list[Entry] = field(default_factory=list)
    # record key -> what this run reported about it (clean records with nothing open are not kept)
    sightings: dict[str, Sighting] = field(default_factory=dict)
    # keys of the records whose state existed before the run: a clean sighting of those closes it
    had_state: set[str] = field(default_factory=set)

    def report(
        self,
        entity: EntryEntity,
        *,
        xpm_uuid: str | None,
        label: str,
        entries: Iterable[Entry] = (),
        retry_copy: str | None = None,
        web_url: str | None = None,
    ) -> None:
        """The record's outcome in this run: its entries join the log; its sighting is kept when it
        has something open now or had before.

        The label is shortened as an entry's is: the record's state (and, for a record without a
        UUID, its key) must fit a DynamoDB item whatever XPM sent (a 450,000-character Name)."""
        label = shorten(label, MAX_LABEL_CHARS)
        found = tuple(entries)
        self.entries.extend(found)
        if xpm_uuid:
            self._came_with_its_uuid(entity, label)
        key = record_key(entity, xpm_uuid, label)
        if not found and retry_copy is None and key not in self.had_state and key not in self.sightings:
            return
        sighting = Sighting(
            entity=entity,
            key=key,
            label=label,
            entries=found,
            xpm_uuid=xpm_uuid or None,
            web_url=web_url,
            retry_copy=retry_copy,
        )
        earlier = self.sightings.get(key)
        self.sightings[key] = earlier.merged(sighting) if earlier is not None else sighting

    def _came_with_its_uuid(self, entity: EntryEntity, label: str) -> None:
        """A record XPM sent without a UUID is kept by its label (SPEC B6). Sent with its UUID
        again, it is that record: what was open under its label closes in this run, not at the
        next full read (the only run that would otherwise find the label no longer listed)."""
        by_label = record_key(entity, None, label)
        if by_label in self.had_state and by_label not in self.sightings:
            self.sightings[by_label] = Sighting(entity=entity, key=by_label, label=label, entries=())

    def run_level(self, entry: Entry) -> None:
        self.entries.append(entry)
