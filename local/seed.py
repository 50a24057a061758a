"""Seed data for the local stack: a firm's Active records and its XPM connection.

What a firm has in Active before its first sync: an office, the partners as users (with the
attributes only Active owns: role, office, modules), and one client created by hand during a trial
with a code that XPM also has.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from local.xpm_sim import Practice

TRIAL_NOTE = "Entered by hand during the trial; keep this note"


@dataclass(frozen=True)
class SeededFirm:
    firm_id: str
    office_code: str
    admin_user_id: str
    partner_user_ids: dict[str, str]  # XPM staff uuid -> Active user id
    hand_made_client_id: str | None
    hand_made_client_code: str | None


def user_item(
    firm_id: str, *, email: str, first_name: str, last_name: str, role: str, office_code: str
) -> dict[str, Any]:
    user_id = str(uuid.uuid4())
    return {
        "pk": f"FIRM#{firm_id}",
        "sk": f"USER#{user_id}",
        "firm_id": firm_id,
        "entity": "user",
        "user_id": user_id,
        "email": email,
        "first_name": first_name,
        "last_name": last_name,
        "role": role,
        "office_code": office_code,
        "modules": ["tax", "practice"],
    }


def seed_active_firm(
    active_table: Any,
    firm_id: str,
    practice: Practice,
    *,
    office_code: str = "MEL",
    default_partner: bool = False,
    hand_made_client: bool = True,
) -> SeededFirm:
    admin = user_item(
        firm_id,
        email="admin@firm.example",
        first_name="Avery",
        last_name="Admin",
        role="admin",
        office_code=office_code,
    )
    active_table.put_item(Item=admin)
    partner_ids: dict[str, str] = {}
    for partner in practice.partner_staff():
        if partner.uuid in practice.partners_without_active_user or not partner.email or not partner.name:
            continue
        first, _, last = partner.name.rpartition(" ")
        # Active keeps emails as people typed them: matching must ignore case and spaces.
        item = user_item(
            firm_id,
            email=f" {partner.email.upper()} ",
            first_name=first or partner.name,
            last_name=last,
            role="partner",
            office_code=office_code,
        )
        active_table.put_item(Item=item)
        partner_ids[partner.uuid] = str(item["user_id"])
    office: dict[str, Any] = {
        "pk": f"FIRM#{firm_id}",
        "sk": f"OFFICE#{office_code}",
        "firm_id": firm_id,
        "entity": "office",
        "code": office_code,
        "name": "Melbourne",
    }
    if default_partner and partner_ids:
        office["default_partner_user_id"] = next(iter(partner_ids.values()))
    active_table.put_item(Item=office)

    client_id = code = None
    if hand_made_client:
        problem_uuids = {u for uuids in practice.problems.values() for u in uuids}
        candidate = next(
            c
            for c in practice.clients
            if c.code and c.uuid not in problem_uuids and c.account_manager_uuid in partner_ids
        )
        client_id, code = str(uuid.uuid4()), candidate.code
        active_table.put_item(
            Item={
                "pk": f"FIRM#{firm_id}",
                "sk": f"CLIENT#{client_id}",
                "firm_id": firm_id,
                "entity": "client",
                "client_id": client_id,
                "code": code,
                "legal_name": f"{candidate.name} (trial)",
                "entity_type": "company",
                "office_code": office_code,
                "notes": TRIAL_NOTE,
            }
        )
    return SeededFirm(firm_id, office_code, str(admin["user_id"]), partner_ids, client_id, code)


def seed_connection(
    config_table: Any,
    secrets_client: Any,
    *,
    firm_id: str,
    tenant_id: str,
    tokens: dict[str, Any],
    token_secret_prefix: str,
    office_code: str,
    notification_user_id: str | None = None,
    sync_enabled: bool = True,
    tenant_name: str | None = None,
) -> None:
    """What a finished setup leaves behind: tokens in the firm's secret, settings in Config."""
    secrets_client.create_secret(
        Name=f"{token_secret_prefix}{firm_id}",
        SecretString=json.dumps(
            {
                "access_token": tokens["access_token"],
                "refresh_token": tokens["refresh_token"],
                "expires_at": int(time.time()) + int(tokens.get("expires_in", 1800)),
            }
        ),
    )
    item: dict[str, Any] = {
        "firm_id": firm_id,
        "sync_name": "XPM sync",
        "tenant_id": tenant_id,
        "default_office_code": office_code,
        "status": "connected",
        "sync_enabled": sync_enabled,
    }
    if notification_user_id:
        item["notification_user_id"] = notification_user_id
    if tenant_name:
        item["tenant_name"] = tenant_name
    config_table.put_item(Item=item)
