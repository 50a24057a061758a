"""Active records as the sync sees them (SPEC A3, B3): what it writes, and what it reads back.

Only the synced attributes are modelled. Everything else on an Active item (notes, role, office,
modules, ...) belongs to Active: it is never read into these records, so it can never be written
back from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

EntityType = Literal["individual", "sole_trader", "partnership", "company", "trust", "super_fund", "other"]

# The attributes the sync owns on each kind of record (SPEC A3's tables, plus the link to XPM).
USER_SYNCED_ATTRIBUTES = ("first_name", "last_name", "email", "xpm_uuid")
CLIENT_SYNCED_ATTRIBUTES = (
    "legal_name",
    "individual_title",
    "email",
    "telephone",
    "fax",
    "code",
    "partner_user_id",
    "manager_user_id",
    "residential_address",
    "postal_address",
    "client_group",
    "abn",
    "entity_type",
    "individual_first_name",
    "individual_last_name",
    "individual_salutation",
    "xpm_uuid",
    "xpm_archived",
)


class ActiveModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Address(ActiveModel):
    line1: str | None = None
    line2: str | None = None
    line3: str | None = None
    suburb: str | None = None
    state: str | None = None
    post_code: str | None = None

    def is_empty(self) -> bool:
        return all(value is None for value in self.model_dump().values())


class UserFields(ActiveModel):
    """The synced attributes of an Active user, from XPM's staff record."""

    first_name: str
    last_name: str
    email: str


class ClientFields(ActiveModel):
    """The synced attributes of an Active client from XPM's client record, before the partner and
    manager are resolved to Active users (``domain.partners``)."""

    legal_name: str
    individual_title: str | None = None
    email: str | None = None
    telephone: str | None = None
    fax: str | None = None
    code: str
    residential_address: Address | None = None
    postal_address: Address | None = None
    client_group: str | None = None
    abn: str | None = None
    entity_type: EntityType
    individual_first_name: str | None = None
    individual_last_name: str | None = None
    individual_salutation: str | None = None


class Office(ActiveModel):
    code: str
    name: str | None = None
    default_partner_user_id: str | None = None


# Values as DynamoDB holds them: strings, booleans, maps (addresses); None = absent.
SyncedValues = Mapping[str, object]


def _synced(item: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, object]:
    return {name: item[name] for name in names if item.get(name) is not None}


class _Synced:
    """Text attributes of a stored record's synced values (absent and empty both read as None)."""

    __slots__ = ()
    synced: SyncedValues

    def _text(self, name: str) -> str | None:
        value = self.synced.get(name)
        return value if isinstance(value, str) and value else None

    @property
    def xpm_uuid(self) -> str | None:
        return self._text("xpm_uuid")


@dataclass(frozen=True, slots=True)
class StoredUser(_Synced):
    """An Active user item, reduced to its id and the attributes the sync owns."""

    user_id: str
    synced: SyncedValues

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> StoredUser:
        return cls(user_id=str(item["user_id"]), synced=_synced(item, USER_SYNCED_ATTRIBUTES))

    @property
    def email(self) -> str | None:
        return self._text("email")


@dataclass(frozen=True, slots=True)
class StoredClient(_Synced):
    """An Active client item, reduced to its id and the attributes the sync owns."""

    client_id: str
    synced: SyncedValues

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> StoredClient:
        return cls(client_id=str(item["client_id"]), synced=_synced(item, CLIENT_SYNCED_ATTRIBUTES))

    def with_changes(self, changes: SyncedValues) -> StoredClient:
        """The record once ``changes`` are written (``None`` removes an attribute)."""
        merged = {**self.synced, **changes}
        return StoredClient(self.client_id, {k: v for k, v in merged.items() if v is not None})

    @property
    def code(self) -> str | None:
        return self._text("code")

    @property
    def legal_name(self) -> str | None:
        return self._text("legal_name")

    @property
    def abn(self) -> str | None:
        return self._text("abn")

    @property
    def archived_in_xpm(self) -> bool:
        return self.synced.get("xpm_archived") is True

    @property
    def label(self) -> str:
        """The client as an admin finds it in Active: "Name (CODE)", or whichever it has."""
        name, code = self.legal_name, self.code
        if name and code:
            return f"{name} ({code})"
        return name or code or f"Active client {self.client_id}"
