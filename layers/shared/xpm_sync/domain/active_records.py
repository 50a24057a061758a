"""Active records as the sync writes them (SPEC A3, B3).

Only the synced attributes are modelled: everything else on an Active item belongs to Active and
is never read into, or written from, these models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

EntityType = Literal["individual", "sole_trader", "partnership", "company", "trust", "super_fund", "other"]


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
    """The synced attributes of an Active user."""

    first_name: str
    last_name: str
    email: str


class ClientFields(ActiveModel):
    """The synced attributes of an Active client, before partner/manager resolution.

    ``partner_user_id`` and ``manager_user_id`` are resolved later by the sync (they need the firm's
    users); the mapping leaves the XPM staff UUIDs on :class:`xpm_sync.domain.mapping.ClientMapping`.
    """

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
