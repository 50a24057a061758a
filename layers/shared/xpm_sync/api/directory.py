"""The few reads and the one write the setup page needs on the Active table (SPEC B3).

Single-item reads by key (``pk=FIRM#{firm}``): an office or user of another firm is simply not
found. The only write is the default office's ``default_partner_user_id`` (SPEC A2: the setup
page writes the same attribute as Admin Centre -> Office).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from xpm_sync.dynamodb import Table, is_condition_failure


class OfficeGone(Exception):
    """The office was deleted between the check and the write."""


class ActiveDirectory:
    def __init__(self, table: Table, firm_id: str) -> None:
        self._table = table
        self._pk = f"FIRM#{firm_id}"

    def _item(self, sk: str) -> dict[str, Any] | None:
        item = self._table.get_item(Key={"pk": self._pk, "sk": sk}, ConsistentRead=True).get("Item")
        return item if isinstance(item, dict) else None

    def office(self, code: str) -> dict[str, Any] | None:
        return self._item(f"OFFICE#{code}")

    def user_exists(self, user_id: str) -> bool:
        return self._item(f"USER#{user_id}") is not None

    def default_partner(self, office_code: str | None) -> str | None:
        office = self.office(office_code) if office_code else None
        value = office.get("default_partner_user_id") if office else None
        return value if isinstance(value, str) else None

    def set_default_partner(self, office_code: str, user_id: str) -> None:
        try:
            self._table.update_item(
                Key={"pk": self._pk, "sk": f"OFFICE#{office_code}"},
                UpdateExpression="SET default_partner_user_id = :user",
                ExpressionAttributeValues={":user": user_id},
                # Never create an office: only Admin Centre does that.
                ConditionExpression="attribute_exists(pk)",
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                raise OfficeGone(office_code) from None
            raise
