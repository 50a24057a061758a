"""Who is calling (SPEC B4): the claims API Gateway's Cognito authorizer put on the request.

The firm comes from the claims alone, never from the path, query or body, so a caller can only
ever reach its own firm's data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xpm_sync.domain.errors import NotAnAdmin, NotSignedIn

ADMIN_GROUP = "admin"
FIRM_CLAIM = "custom:firm_id"
GROUPS_CLAIM = "cognito:groups"

# REST API authorizers flatten a list claim into text: "admin", "admin,staff", "[admin staff]" or
# '["admin","staff"]'.
_GROUP_SEPARATORS = re.compile(r"[\s,]+")
_QUOTES = "\"'"


@dataclass(frozen=True)
class Caller:
    firm_id: str
    user_sub: str | None  # Cognito always sends it; SPEC B4 needs only the firm and the groups
    email: str | None


def groups_of(value: Any) -> set[str]:
    if isinstance(value, list | tuple):
        names = [str(group) for group in value]
    elif isinstance(value, str):
        names = _GROUP_SEPARATORS.split(value.strip().strip("[]"))
    else:
        return set()
    return {stripped for name in names if (stripped := name.strip().strip(_QUOTES).strip())}


def _claims(event: Mapping[str, Any]) -> Mapping[str, Any]:
    context = event.get("requestContext")
    authorizer = context.get("authorizer") if isinstance(context, Mapping) else None
    claims = authorizer.get("claims") if isinstance(authorizer, Mapping) else None
    return claims if isinstance(claims, Mapping) else {}


def _text(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if not isinstance(value, str):
        return None
    return value.strip() or None


def admin_caller(event: Mapping[str, Any]) -> Caller:
    """The calling admin; 401 without a signed-in user, 403 without a firm or the admin group."""
    claims = _claims(event)
    if not claims:
        raise NotSignedIn("Sign in to Active first.")
    firm_id = _text(claims, FIRM_CLAIM)
    if firm_id is None:
        raise NotAnAdmin("Your account does not belong to a firm.")
    if ADMIN_GROUP not in groups_of(claims.get(GROUPS_CLAIM)):
        raise NotAnAdmin("Only an Active admin can manage the Xero Practice Manager integration.")
    return Caller(
        firm_id=firm_id,
        user_sub=_text(claims, "sub") or _text(claims, "cognito:username"),
        email=_text(claims, "email"),
    )
