"""Write docs/openapi.json, the REST API's contract, from the two resolvers that serve it.

The document is generated from the routes and pydantic models themselves, so it cannot drift from
the code: ``--write`` regenerates it, ``--check`` exits 1 when the committed file is stale (and
tests/unit/test_openapi.py fails). Run from the repository root with the layer on the path:
``PYTHONPATH=layers/shared python -m scripts.openapi --write``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge
from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn

from functions.api.app import app as api_app
from functions.oauth.app import app as oauth_app
from scripts.generated_files import write_or_check

ROOT = Path(__file__).resolve().parent.parent
OPENAPI_JSON = ROOT / "docs" / "openapi.json"
TITLE = "xpm-sync API"
VERSION = "1.0.0"
DESCRIPTION = (
    "Connect a firm's Xero Practice Manager, configure and start its sync, and read the sync log "
    "(SPEC B5). Every route needs a Cognito id token of an admin of the firm (SPEC B4); no route is "
    "public. A body the API cannot read (not UTF-8, nested deeper than 64 levels, a number of more "
    'than 100 digits, over 64 KB) is 400 INVALID_JSON. Errors are {"error": {"code", "message"}} '
    "with a 4xx status."
)


def render() -> str:
    """The OpenAPI document (JSON text, stable key order, trailing newline)."""
    merge = OpenAPIMerge(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        # API Gateway's Cognito authorizer reads the id token from the Authorization header as is.
        security_schemes={"cognito": APIKey(in_=APIKeyIn.header, name="Authorization")},
        security=[{"cognito": []}],
        on_conflict="error",
    )
    for app in (oauth_app, api_app):
        merge.add_schema(json.loads(app.get_openapi_json_schema(title=TITLE, version=VERSION)))
    schema: dict[str, Any] = json.loads(merge.get_openapi_json_schema())
    _drop_unused_schemas(schema)
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def _drop_unused_schemas(schema: dict[str, Any]) -> None:
    """Powertools always adds its own validation-error schemas; ours answer ErrorBody instead."""
    schemas: dict[str, Any] = schema["components"]["schemas"]
    used: set[str] = set()
    pending = [json.dumps(schema["paths"])]
    while pending:
        for name in re.findall(r"#/components/schemas/(\w+)", pending.pop()):
            if name not in used:
                used.add(name)
                pending.append(json.dumps(schemas[name]))
    for name in set(schemas) - used:
        del schemas[name]


def main(argv: list[str] | None = None) -> int:
    description = __doc__.splitlines()[0] if __doc__ else None
    return write_or_check(
        argv, description, {OPENAPI_JSON: render}, ROOT, "run `python -m scripts.openapi --write`"
    )


if __name__ == "__main__":
    sys.exit(main())
