"""The one place where exceptions become HTTP answers (SPEC B5's error body) for both API functions.

Client mistakes are 4xx in the shape ``{"error": {"code", "message"}}``; 422s also name the
``field``; 429s carry ``retry_after`` in ``error`` and at the top level, and a ``Retry-After``
header. Messages are written here, never copied from the exception or from the request, so nothing
a caller sent (or a token) is echoed back.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from xpm_sync.adapters.xero_identity import AppCredentialsUnavailable, XeroIdentityError
from xpm_sync.api.caller import admin_caller
from xpm_sync.api.models import ErrorBody, ErrorDetail
from xpm_sync.domain.errors import (
    BadRequest,
    DomainError,
    InvalidCursor,
    InvalidValue,
    NoPracticeManager,
    NotAnAdmin,
    NotConfigured,
    NotConnected,
    NotFound,
    NotSignedIn,
    OAuthStateInvalid,
    PreviewTooSoon,
    SyncTooSoon,
    XeroConsentDenied,
    XeroUnavailable,
)
from xpm_sync.observability import logger, tracer
from xpm_sync.runtime import usable_context

ROUTE_ROOT = "/integrations/xpm"

# What Lambda calls: the event and whatever context the caller passes (see xpm_sync.runtime).
LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]

# For the OpenAPI document: what every route may answer besides its success.
ERROR_CONTENT = {"application/json": {"model": ErrorBody}}


_ERROR_DESCRIPTIONS = {
    400: (
        "The body is not JSON the API can read (INVALID_JSON: not UTF-8, nested deeper than 64 levels, "
        "a number of more than 100 digits, over 64 KB), or the cursor is not valid"
    ),
    401: "No signed-in user",
    403: "Not an admin of a firm",
    404: "Not found (another firm's run or suggestion reads the same)",
    409: (
        "The firm is not connected to Xero Practice Manager, or must connect again (NOT_CONNECTED); "
        "Start Sync or Preview before the setup names a tenant, a default office and a notification "
        "user (NOT_CONFIGURED, naming the missing fields)"
    ),
    422: "A field is missing, of the wrong type, or names something that does not exist",
    429: (
        "Start Sync (SYNC_TOO_SOON) or Preview (PREVIEW_TOO_SOON) pressed too soon; retry_after says "
        "when it can be pressed again"
    ),
    502: "Xero did not answer",
}


def documented(status: int, model: type[BaseModel], description: str, *errors: int) -> dict[int, Any]:
    """A route's answers for the OpenAPI document: its success and the B5 errors it can give.

    Powertools documents only the statuses listed once any are, so the success is listed too.
    """
    answers: dict[int, Any] = {
        status: {"description": description, "content": {"application/json": {"model": model}}}
    }
    # Every route reads its body, whether it takes one or not: a body that is not JSON is a 400.
    for error in sorted({400, *errors}):
        answers[error] = {"description": _ERROR_DESCRIPTIONS[error], "content": ERROR_CONTENT}
    return answers


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    retry_after: int | None = None,
) -> Response[str]:
    detail = ErrorDetail(code=code, message=message, field=field, retry_after=retry_after)
    body = ErrorBody(error=detail, retry_after=retry_after)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body.model_dump_json(exclude_none=True),
        headers=headers,
    )


_TYPE_MESSAGES = {
    "missing": "{field} is required.",
    "string_type": "{field} must be a string.",
    "string_too_short": "{field} must not be empty.",
    "string_too_long": "{field} is too long.",
    "int_type": "{field} must be a whole number.",
    "int_parsing": "{field} must be a whole number.",
    "greater_than_equal": "{field} is too small.",
    "less_than_equal": "{field} is too large.",
    "model_attributes_type": "{field} must be a JSON object.",
    "dict_type": "{field} must be a JSON object.",
    "literal_error": "{field} is not one of the values it can take.",
}


def _field(loc: Sequence[Any]) -> str:
    # loc is ("body", "tenant_id") or ("query", "limit"); the body itself is ("body",).
    parts = [str(part) for part in loc[1:]] or [str(loc[0]) if loc else "request"]
    return ".".join(parts)


def _validation_response(errors: Sequence[Mapping[str, Any]]) -> Response[str]:
    first = errors[0] if errors else {"loc": ("body",), "type": "json_invalid"}
    loc = tuple(first.get("loc", ()))
    kind = str(first.get("type", ""))
    # A body that is not JSON at all (or absent) is malformed, not a bad value: 400 (SPEC B5).
    if kind == "json_invalid" or (loc == ("body",) and kind == "missing"):
        return error_response(400, "INVALID_JSON", "The request body must be a JSON object.")
    messages = []
    for error in errors:
        name = _field(tuple(error.get("loc", ())))
        template = _TYPE_MESSAGES.get(str(error.get("type", "")), "{field} is not valid.")
        messages.append(template.format(field=name))
    return error_response(422, "INVALID_FIELD", " ".join(dict.fromkeys(messages)), field=_field(loc))


# Each domain refusal's HTTP answer (SPEC B5): the first class an error is an instance of wins.
HTTP_ANSWERS: tuple[tuple[type[DomainError], int, str], ...] = (
    (BadRequest, 400, "BAD_REQUEST"),
    (InvalidCursor, 400, "INVALID_CURSOR"),
    (NotSignedIn, 401, "UNAUTHORIZED"),
    (NotAnAdmin, 403, "FORBIDDEN"),
    (NotFound, 404, "NOT_FOUND"),
    (NotConnected, 409, "NOT_CONNECTED"),
    (NotConfigured, 409, "NOT_CONFIGURED"),
    (InvalidValue, 422, "INVALID_FIELD"),
    (PreviewTooSoon, 429, "PREVIEW_TOO_SOON"),
    (SyncTooSoon, 429, "SYNC_TOO_SOON"),
    (XeroUnavailable, 502, "XERO_UNAVAILABLE"),
    (OAuthStateInvalid, 400, "OAUTH_STATE_INVALID"),
    (XeroConsentDenied, 400, "XERO_CONSENT_DENIED"),
    (NoPracticeManager, 422, "NO_PRACTICE_MANAGER"),
)


def http_answer(error: DomainError) -> tuple[int, str]:
    """The status and B5 error code of a domain refusal."""
    for kind, status, code in HTTP_ANSWERS:
        if isinstance(error, kind):
            return status, code
    return 400, "BAD_REQUEST"


def domain_error_response(error: DomainError) -> Response[str]:
    status, code = http_answer(error)
    if isinstance(error, SyncTooSoon):
        return error_response(status, code, error.message, retry_after=error.retry_after)
    if isinstance(error, InvalidValue):
        return error_response(status, code, error.message, field=error.field)
    return error_response(status, code, error.message)


def invalid_request_response(error: RequestValidationError) -> Response[str]:
    return _validation_response(list(error.errors()))


def _unsupported(_: Exception | None = None) -> Response[str]:
    # Bodies reach Powertools labelled application/json (_with_json_body); should one not, it is a
    # body the API cannot read, which SPEC B5 answers with 400 whatever its type claims.
    return error_response(400, "INVALID_JSON", "The request body must be JSON.")


def _no_route(_: NotFoundError) -> Response[str]:
    return error_response(404, "NOT_FOUND", "No such route.")


def _service_error(error: ServiceError) -> Response[str]:
    return error_response(error.status_code, "ERROR", "The request could not be served.")


def _xero(error: XeroIdentityError) -> Response[str]:
    logger.warning("xero call failed", extra={"detail": str(error)})
    return domain_error_response(XeroUnavailable())


def _app_credentials(error: AppCredentialsUnavailable) -> Response[str]:
    # The deployment's own secret, not Xero and not the caller: an operator's fix.
    logger.error("the app's credentials secret could not be used", extra={"detail": str(error)})
    return error_response(500, "INTERNAL_ERROR", "Something went wrong on our side; try again later.")


def _not_utf8(_: UnicodeDecodeError) -> Response[str]:
    # Raised while Powertools decodes the body, before any JSON parsing: a body of raw bytes.
    return error_response(400, "INVALID_JSON", _NOT_UTF8)


def _unexpected(error: Exception) -> Response[str]:
    # Our exceptions never carry tokens (see xpm_sync.adapters.tokens, xpm_sync.adapters.xero_identity), so
    # the traceback is safe to log; the caller only learns that it was not their fault.
    logger.exception("unexpected error in API request")
    return error_response(500, "INTERNAL_ERROR", "Something went wrong on our side; try again later.")


def install_error_handlers(app: APIGatewayRestResolver) -> None:
    """Register every exception -> HTTP mapping on a resolver (each API function calls this once)."""
    app.exception_handler(DomainError)(domain_error_response)
    app.exception_handler(RequestValidationError)(invalid_request_response)
    app.exception_handler(RequestUnsupportedContentType)(_unsupported)
    app.not_found(_no_route)
    app.exception_handler(ServiceError)(_service_error)
    app.exception_handler(XeroIdentityError)(_xero)
    app.exception_handler(AppCredentialsUnavailable)(_app_credentials)
    app.exception_handler(UnicodeDecodeError)(_not_utf8)
    app.exception_handler(Exception)(_unexpected)


class _AdminResolver(APIGatewayRestResolver):
    """Powertools' REST resolver, with path parameters as API Gateway gives them: decoded.

    Powertools matches the route against ``path``, which API Gateway sends percent-encoded, and
    hands a route the matched text as it is: ``/matches/with%20space`` would look up
    ``with%20space``. The matched text is decoded here (``%2F`` included, which the route's match
    cannot see), which is what API Gateway puts in ``pathParameters``; the path is read rather than
    that field so that the two can never disagree.
    """

    def _convert_matches_into_route_keys(self, match: re.Match[str]) -> dict[str, str]:
        return {name: unquote(matched) for name, matched in match.groupdict().items()}


def admin_api() -> APIGatewayRestResolver:
    """The resolver of one API function's routes: requests validated against each route's
    signature, path parameters decoded, every exception answered as B5's error body."""
    app = _AdminResolver(enable_validation=True)
    install_error_handlers(app)
    return app


def admin_lambda_handler(app: APIGatewayRestResolver, frontend_url: Callable[[], str]) -> LambdaHandler:
    """An API function's entry point: ``app``'s routes, for firms' admins only
    (:func:`resolve_for_admins`), logged and traced per invocation, each answer readable by the
    Active frontend (``frontend_url``, read at each call) and no other origin."""

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
    @tracer.capture_lambda_handler
    def _handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return with_cors(resolve_for_admins(app, event, context), frontend_url())

    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        answer: dict[str, Any] = _handle(event, usable_context(context))
        return answer

    return lambda_handler


def _proxy_answer(response: Response[str]) -> dict[str, Any]:
    """A Response as the Lambda proxy answer the REST resolver would give (``with_cors`` adds the rest)."""
    return {
        "statusCode": response.status_code,
        "multiValueHeaders": {
            name: [str(v) for v in value] if isinstance(value, list) else [str(value)]
            for name, value in response.headers.items()
        },
        "body": response.body,
        "isBase64Encoded": False,
    }


def _given_query(event: Mapping[str, Any]) -> dict[str, Any]:
    """The query in both of API Gateway's forms, without what was not given.

    API Gateway sends no null in either form; a hand-built event may, and Powertools' validation
    fails on one (a 500) even for a parameter the route does not take. A null value, or a null item
    of a multi-value list, is a parameter not given; a multi-value that is not a list is a list of
    one, and a form that is not a map is no query.
    """
    single = event.get("queryStringParameters")
    multi = event.get("multiValueQueryStringParameters")
    values = (
        {name: value for name, value in single.items() if value is not None}
        if isinstance(single, Mapping)
        else {}
    )
    lists: dict[str, list[Any]] = {}
    for name, given in multi.items() if isinstance(multi, Mapping) else ():
        items = [item for item in (given if isinstance(given, list | tuple) else [given]) if item is not None]
        if items:
            lists[name] = items
    return {"queryStringParameters": values or None, "multiValueQueryStringParameters": lists or None}


def _routed(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event with the ``path`` and ``httpMethod`` the routes are written for, and its query
    without null values (:func:`_given_query`).

    Behind a custom domain's base path mapping (or when a caller copies the stage into the path),
    ``path`` carries a prefix before ``/integrations/xpm``; a hand-built event may carry only
    ``requestContext``'s copies of the path and method.
    """
    context = event.get("requestContext")
    context = context if isinstance(context, Mapping) else {}
    path = next((p for p in (event.get("path"), context.get("path")) if isinstance(p, str)), "")
    if not path.startswith(ROUTE_ROOT) and ROUTE_ROOT in path:
        path = path[path.index(ROUTE_ROOT) :]
    method = next((m for m in (event.get("httpMethod"), context.get("httpMethod")) if isinstance(m, str)), "")
    return {**event, "path": path, "httpMethod": method.upper(), **_given_query(event)}


# SPEC B5: what the API reads of a body. Powertools parses JSON with the standard library, which
# recurses once per nesting level (a RecursionError ~1,000 levels down escapes the resolver) and
# refuses integers of more than 4,300 digits with a ValueError inside a route (a 500); neither may
# reach it. The limits are far beyond any body the setup page sends.
MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 64
MAX_NUMBER_DIGITS = 100
_UNREADABLE = "The request body must be a JSON object."
_TOO_LARGE = f"The request body must not be larger than {MAX_BODY_BYTES // 1024} KB."
_NOT_UTF8 = "The request body must be JSON in UTF-8."
_TOO_DEEP = f"The request body must not nest objects or arrays more than {MAX_JSON_DEPTH} levels deep."
_TOO_LONG_NUMBER = f"Numbers in the request body must not have more than {MAX_NUMBER_DIGITS} digits."
# What the scan stops at, outside strings: a string's opening quote, a bracket, a number's first digit.
_MARKS = re.compile(r'["\[\]{}0-9]')
# The rest of a string after its opening quote; possessive, so a string that never closes is found
# in one pass and never scanned again.
_STRING_REST = re.compile(r'(?:[^"\\]|\\.)*+"', re.DOTALL)
_NUMBER = re.compile(r"[0-9][0-9.eE+-]*")
_DIGIT = re.compile(r"[0-9]")


def unreadable_json(text: str) -> str | None:
    """Why the API will not parse this body (nested too deep, a number too long, a string that never
    ends), or None when Powertools may parse it. One pass, no recursion, whatever the input: it
    looks only at brackets, strings and numbers, and leaves every other mistake to the parser."""
    depth = 0
    position = 0
    while (mark := _MARKS.search(text, position)) is not None:
        char = mark.group()
        if char == '"':
            string = _STRING_REST.match(text, mark.end())
            if string is None:
                return _UNREADABLE
            position = string.end()
        elif char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return _TOO_DEEP
            position = mark.end()
        elif char in "]}":
            depth -= 1  # unbalanced brackets are the parser's to refuse
            position = mark.end()
        else:
            number = _NUMBER.match(text, mark.start())
            assert number is not None  # it starts with the digit just found
            if len(_DIGIT.findall(number.group())) > MAX_NUMBER_DIGITS:
                return _TOO_LONG_NUMBER
            position = number.end()
    return None


def _body_text(event: Mapping[str, Any]) -> str | Response[str] | None:
    """The body as text, or the answer refusing it: over 64 KB, not UTF-8 (also when API Gateway
    sent it base64-encoded), or a hand-built event's JSON value that cannot be written as JSON."""
    body = event.get("body")
    invalid = error_response(400, "INVALID_JSON", _UNREADABLE)
    if body is None:
        return None
    if not isinstance(body, str):
        # A hand-built event may carry the JSON value itself.
        try:
            body = json.dumps(body)
        except (ValueError, TypeError, RecursionError):
            return invalid
    if event.get("isBase64Encoded"):
        # Four base64 characters carry three bytes: refuse an oversized body before decoding it.
        if len(body) > (MAX_BODY_BYTES + 2) // 3 * 4 + 4:
            return error_response(400, "INVALID_JSON", _TOO_LARGE)
        try:
            raw = base64.b64decode(body, validate=True)
        except binascii.Error:
            return invalid
    else:
        if len(body) > MAX_BODY_BYTES:  # characters never outnumber their UTF-8 bytes
            return error_response(400, "INVALID_JSON", _TOO_LARGE)
        try:
            raw = body.encode("utf-8")  # a lone surrogate (a "\\ud800" escape in the event) is not UTF-8
        except UnicodeEncodeError:
            return error_response(400, "INVALID_JSON", _NOT_UTF8)
    if len(raw) > MAX_BODY_BYTES:
        return error_response(400, "INVALID_JSON", _TOO_LARGE)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return error_response(400, "INVALID_JSON", _NOT_UTF8)


def _not_json(constant: str) -> Any:
    # Python reads NaN and Infinity, which JSON (RFC 8259) does not have.
    raise ValueError(f"{constant} is not JSON")


# Methods whose requests carry no body in this API: one sent is checked readable, then ignored.
_BODILESS_METHODS = frozenset({"GET", "DELETE", "HEAD", "OPTIONS"})
# What a JSON value that is not an object is handed to Powertools as: a route that reads a body
# refuses it as any non-object (422 naming the body), and a route that reads none ignores it.
_NOT_AN_OBJECT = "0"


def _with_json_body(event: dict[str, Any]) -> dict[str, Any] | Response[str]:
    """The event with its body as JSON text for Powertools to validate, or the answer refusing it.

    API Gateway sends the body as text, or as base64 with ``isBase64Encoded``; a hand-built event
    may carry the JSON value itself. A body the API cannot read is refused here, before Powertools
    parses it (SPEC B5), whatever its Content-Type says: SPEC B5 answers a body that is not JSON
    with 400, so the type a client labels it with decides nothing. Powertools would take the first
    item of a JSON array for the object a route expects, and a JSON ``null`` for no body at all,
    so both reach it as a plain non-object value.
    """
    body = _body_text(event)
    if isinstance(body, Response):
        return body
    prepared = {**event, "body": body, "isBase64Encoded": False}
    if body is None or not body.strip():
        return prepared
    headers = {str(k): v for k, v in (event.get("headers") or {}).items()}
    multi_headers = {str(k): v for k, v in (event.get("multiValueHeaders") or {}).items()}
    problem = unreadable_json(body)
    if problem is not None:
        return error_response(400, "INVALID_JSON", problem)
    try:
        parsed = json.loads(body, parse_constant=_not_json)
    except ValueError:
        # SPEC B5 refuses a body that is not JSON on every route, whether it reads one or not.
        return error_response(400, "INVALID_JSON", _UNREADABLE)
    if str(event.get("httpMethod", "")).upper() in _BODILESS_METHODS:
        return {**prepared, "body": None}  # read, and ignored: the route takes none
    # Every header of the event names the body's type as Powertools expects it.
    prepared["headers"] = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    prepared["headers"]["Content-Type"] = content_types.APPLICATION_JSON
    prepared["multiValueHeaders"] = {k: v for k, v in multi_headers.items() if k.lower() != "content-type"}
    prepared["multiValueHeaders"]["Content-Type"] = [content_types.APPLICATION_JSON]
    if parsed is None or isinstance(parsed, list):
        prepared["body"] = _NOT_AN_OBJECT
    return prepared


def resolve_for_admins(app: APIGatewayRestResolver, event: dict[str, Any], context: Any) -> dict[str, Any]:
    """SPEC B4 before anything else: who is calling is checked before the route, the body or the
    query is looked at, so a caller who is not a firm's admin is refused (401/403) whatever else is
    wrong with the request. No route is public.
    """
    event = _routed(event)
    try:
        admin_caller(event)
    except DomainError as error:
        return _proxy_answer(domain_error_response(error))
    prepared = _with_json_body(event)
    if isinstance(prepared, Response):
        return _proxy_answer(prepared)
    return app.resolve(prepared, context)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def with_cors(response: dict[str, Any], frontend_url: str) -> dict[str, Any]:
    """Let the Active frontend (and only it) read every answer, errors included; headers in both forms.

    API Gateway answers the preflight itself (template.yaml's Cors), but with a proxy integration
    the actual responses must carry the header; done here, after the resolver, so error answers
    from exception handlers carry it too. The resolver answers with ``multiValueHeaders`` only;
    ``headers`` (the last value of each) is added so a reader of either form sees every header.
    API Gateway accepts both and, for a name in both, keeps the ``multiValueHeaders`` values.
    """
    cors = {"Access-Control-Allow-Origin": origin_of(frontend_url), "Vary": "Origin"}
    multi: dict[str, list[str]] = {
        name: [str(value)] for name, value in (response.get("headers") or {}).items()
    }
    for name, values in (response.get("multiValueHeaders") or {}).items():
        listed = [str(value) for value in values] if isinstance(values, list | tuple) else [str(values)]
        if listed:
            multi[name] = listed
    multi.update({name: [value] for name, value in cors.items()})
    single = {name: values[-1] for name, values in multi.items()}
    return {**response, "headers": single, "multiValueHeaders": multi}
