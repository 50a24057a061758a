"""Config table writes of the setup flow that must leave every B3 attribute in place.

SPEC B3 says a firm's config item carries ``status`` and ``sync_enabled``; the writes of connect,
callback and PUT set them only where absent (``if_not_exists``), so an item the API creates has
them from the start and no write here overwrites the value the worker or Start Sync set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xpm_sync.config import ConfigRepository

# What a firm's config starts as (SPEC B3, B5: "not_connected before any connect").
NEW_CONFIG_DEFAULTS: Mapping[str, Any] = {"status": "not_connected", "sync_enabled": False}


class ApiConfigs(ConfigRepository):
    def update_with_defaults(self, firm_id: str, defaults: Mapping[str, Any], **values: Any) -> None:
        """``update`` the given values (``None`` and empty sets remove), and set each of
        ``defaults`` not among them only where the item does not have it yet."""
        to_set = {k: v for k, v in values.items() if v is not None and v != set()}
        to_remove = [k for k in values if k not in to_set]
        to_default = {k: v for k, v in defaults.items() if k not in values}
        assignments = [f"#{k} = :{k}" for k in to_set]
        assignments += [f"#{k} = if_not_exists(#{k}, :default_{k})" for k in to_default]
        parts = []
        if assignments:
            parts.append("SET " + ", ".join(assignments))
        if to_remove:
            parts.append("REMOVE " + ", ".join(f"#{k}" for k in to_remove))
        if not parts:
            return
        names = {f"#{k}": k for k in [*values, *to_default]}
        expression_values = {f":{k}": v for k, v in to_set.items()}
        expression_values.update({f":default_{k}": v for k, v in to_default.items()})
        kwargs: dict[str, Any] = {
            "Key": {"firm_id": firm_id},
            "UpdateExpression": " ".join(parts),
            "ExpressionAttributeNames": names,
        }
        if expression_values:
            kwargs["ExpressionAttributeValues"] = expression_values
        self._table.update_item(**kwargs)
