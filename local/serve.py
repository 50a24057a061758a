"""The REST API on loopback: HTTP requests become API Gateway REST proxy events for our handlers.

``serve_api`` is what API Gateway plus the Cognito authorizer do in AWS, reduced to what the
handlers read: the resource template and path parameters, query strings and headers in both
forms, the body, and ``requestContext.authorizer.claims`` from a local dev login (every request
is signed in as one admin, as every route needs in AWS). ``python -m local.serve`` (``make
serve``) runs it on the whole local stack: moto server, the XPM simulator, the template's
resources, a seeded demo firm, and the worker, which runs what Start Sync and preview queue.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3

from functions.api.app import lambda_handler as api_handler
from functions.oauth.app import lambda_handler as oauth_handler
from functions.sync_worker.app import lambda_handler as worker_handler
from local.lambda_runtime import Handler, LocalContext, drain_queue
from local.seed import seed_active_firm, user_item
from local.stack import MotoServer, create_resources, function_environment
from local.xpm_sim import Practice, generate_practice, start_simulator

DEMO_FIRM_ID = "firm-demo"
DEMO_ADMIN_USER_ID = "user-admin"
DEMO_OFFICE_CODE = "MEL"
APP_CLIENT_ID = "local-client-id"
APP_CLIENT_SECRET = "local-client-secret"  # noqa: S105  # the simulator's fake app
STAGE = "local"
JSON = "Content-Type: application/json"

# API Gateway resources (SPEC B5) -> the function that serves them.
_OAUTH_RESOURCES = {"/integrations/xpm/connect", "/integrations/xpm/callback"}
RESOURCES = (
    "/integrations/xpm",
    "/integrations/xpm/connect",
    "/integrations/xpm/callback",
    "/integrations/xpm/tenants",
    "/integrations/xpm/sync",
    "/integrations/xpm/preview",
    "/integrations/xpm/runs",
    "/integrations/xpm/runs/{run_id}",
    "/integrations/xpm/runs/{run_id}/entries",
    "/integrations/xpm/problems",
    "/integrations/xpm/problems/summary",
    "/integrations/xpm/matches",
    "/integrations/xpm/matches/{xpm_uuid}",
)


def _compile(resource: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\{(\\w+)\\}", r"(?P<\\1>[^/]+)", resource) + "$")


_MATCHERS = [(resource, _compile(resource)) for resource in RESOURCES]


def match_resource(path: str) -> tuple[str, dict[str, str] | None]:
    """The resource template and path parameters API Gateway would report for a path."""
    for resource, pattern in _MATCHERS:
        found = pattern.match(path)
        if found:
            return resource, (found.groupdict() or None)
    return path, None


def _multi(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    multi: dict[str, list[str]] = {}
    for key, value in pairs:
        multi.setdefault(key, []).append(value)
    return multi


def build_event(
    method: str,
    raw_path: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    claims: Mapping[str, str] | None,
) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event, the shape ``events/api/*.json`` records."""
    split = urlsplit(raw_path)
    path = split.path or "/"
    resource, path_parameters = match_resource(path)
    query = parse_qs(split.query, keep_blank_values=True)
    multi_headers = _multi(headers)
    # API Gateway hands a body it cannot pass as text to the function base64-encoded.
    try:
        text, encoded = (body.decode("utf-8") if body else None), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode("ascii"), True
    now = datetime.now(UTC)
    context: dict[str, Any] = {
        "accountId": "123456789012",
        "apiId": "localapi",
        "domainName": multi_headers.get("Host", ["127.0.0.1"])[-1],
        "httpMethod": method,
        "identity": {"sourceIp": "127.0.0.1", "userAgent": multi_headers.get("User-Agent", [""])[-1]},
        "path": f"/{STAGE}{path}",
        "protocol": "HTTP/1.1",
        "requestId": str(uuid.uuid4()),
        "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "requestTimeEpoch": int(now.timestamp() * 1000),
        "resourceId": "local",
        "resourcePath": resource,
        "stage": STAGE,
    }
    if claims is not None:
        context["authorizer"] = {"claims": dict(claims)}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {key: values[-1] for key, values in multi_headers.items()},
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {key: values[-1] for key, values in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": context,
        "body": text,
        "isBase64Encoded": encoded,
    }


def dev_claims(firm_id: str, user_sub: str, groups: Sequence[str]) -> dict[str, str]:
    """What the Cognito authorizer would put on the request of a signed-in Active user."""
    now = int(time.time())
    return {
        "sub": user_sub,
        "email": f"{user_sub}@{firm_id}.example",
        "email_verified": "true",
        "cognito:username": user_sub,
        "cognito:groups": ",".join(groups),
        "custom:firm_id": firm_id,
        "token_use": "id",
        "auth_time": str(now),
        "iat": str(now),
        "exp": str(now + 3600),
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    claims: dict[str, str]
    frontend_origin: str
    # One request at a time, as one Lambda container: the resolver keeps the current event on
    # the app object, which concurrent requests would overwrite.
    invoke_lock: threading.Lock


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_OPTIONS(self) -> None:
        # API Gateway answers CORS preflights itself (template.yaml's Cors); so does this.
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", self.server.frontend_origin)
        self.send_header("Access-Control-Allow-Methods", "GET,POST,PUT,DELETE,OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Authorization,Content-Type")
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines are the handlers' to log (the callback's code and state never are).
        return

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        resource, _ = match_resource(path)
        event = build_event(self.command, self.path, list(self.headers.items()), body, self.server.claims)
        function: Handler = oauth_handler if resource in _OAUTH_RESOURCES else api_handler
        name = "oauth" if resource in _OAUTH_RESOURCES else "api"
        with self.server.invoke_lock:
            response = function(event, LocalContext(function_name=f"xpm-sync-{name}", timeout_seconds=30))
        self._answer(response)

    def _answer(self, response: Mapping[str, Any]) -> None:
        payload = response.get("body") or ""
        data = base64.b64decode(payload) if response.get("isBase64Encoded") else str(payload).encode()
        self.send_response(int(response["statusCode"]))
        headers: dict[str, list[str]] = {k: [str(v)] for k, v in (response.get("headers") or {}).items()}
        for key, values in (response.get("multiValueHeaders") or {}).items():
            headers[key] = [str(v) for v in values]
        for key, values in headers.items():
            if key.lower() == "content-length":
                continue
            for value in values:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class ServedApi:
    """The running API: ``url`` to call, ``stop()`` to shut it down and restore the environment."""

    def __init__(self, server: _Server, previous_env: dict[str, str | None]) -> None:
        self._server = server
        self._previous_env = previous_env
        host, port = server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.server_close()
        for key, value in self._previous_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def __enter__(self) -> ServedApi:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def serve_api(
    host: str = "127.0.0.1",
    port: int = 3000,
    *,
    env: dict[str, str],
    firm_id: str = DEMO_FIRM_ID,
    user_sub: str = DEMO_ADMIN_USER_ID,
    groups: Sequence[str] = ("admin",),
) -> ServedApi:
    """Serve both API functions on ``host:port`` (0 picks a free port), signed in as one user.

    ``env`` (the functions' SPEC B2 variables, plus AWS_ENDPOINT_URL and credentials locally) is
    applied to this process's environment, as Lambda would, until ``stop()``.
    """
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    server = _Server((host, port), _Handler)
    server.claims = dev_claims(firm_id, user_sub, groups)
    frontend = urlsplit(env.get("FRONTEND_URL", "http://127.0.0.1:5173"))
    server.frontend_origin = f"{frontend.scheme}://{frontend.netloc}"
    server.invoke_lock = threading.Lock()
    return ServedApi(server, previous)


# --- make serve ---------------------------------------------------------------------------------


def seed_demo_firm(active_table: Any, practice: Practice, firm_id: str = DEMO_FIRM_ID) -> None:
    """The demo firm in Active: office MEL, the partners as users, and the signed-in admin as a
    user with a known id (``user-admin``) so the setup page can name it as notification user."""
    seed_active_firm(active_table, firm_id, practice, office_code=DEMO_OFFICE_CODE)
    admin = user_item(
        firm_id,
        email=f"{DEMO_ADMIN_USER_ID}@{firm_id}.example",
        first_name="Dev",
        last_name="Admin",
        role="admin",
        office_code=DEMO_OFFICE_CODE,
    )
    admin.update(sk=f"USER#{DEMO_ADMIN_USER_ID}", user_id=DEMO_ADMIN_USER_ID)
    active_table.put_item(Item=admin)


def _examples(url: str) -> str:
    base = f"{url}/integrations/xpm"
    return "\n".join(
        [
            "Try (signed in as the admin of firm-demo):",
            f"  curl -s -X POST {base}/connect -H '{JSON}' -d '{{\"sync_name\": \"XPM\"}}'",
            "  # Xero's consent (the simulator allows at once) sends the browser to the setup page:",
            "  curl -s -o /dev/null -w '%{redirect_url}\\n' '<authorize_url>'",
            "  # the setup page posts the code and state on that URL, as the signed-in admin:",
            f"  curl -s -X POST {base}/callback -H '{JSON}' "
            '-d \'{"code": "<code>", "state": "<state>"}\'',
            f"  curl -s {base}",
            f"  curl -s {base}/tenants",
            f'  curl -s -X PUT {base} -H \'Content-Type: application/json\' -d \'{{"sync_name": "XPM", '
            f'"tenant_id": "<from tenants>", "default_office_code": "{DEMO_OFFICE_CODE}", '
            f'"notification_user_id": "{DEMO_ADMIN_USER_ID}"}}\'',
            f"  curl -s -X POST {base}/sync",
            "  # the local worker runs it within seconds, as Lambda's SQS event source would:",
            f"  curl -s '{base}/runs?limit=5'",
            f"  curl -s {base}/problems/summary",
            f"  curl -s -X DELETE {base}",
        ]
    )


def run_worker(queue_url: str, *, every_seconds: float = 2.0) -> Callable[[], None]:
    """The worker as Lambda's SQS event source runs it: the runs Start Sync and preview queue are
    delivered to ``functions/sync_worker`` as they arrive. Returns the function that stops it."""
    stopping = threading.Event()
    sqs = boto3.client("sqs")

    def deliver() -> None:
        while not stopping.wait(every_seconds):
            try:
                drain_queue(sqs, queue_url, worker_handler)
            except Exception as error:  # a local convenience: say so, and keep serving
                print(f"worker: {type(error).__name__}: {error}", flush=True)

    thread = threading.Thread(target=deliver, name="local-worker", daemon=True)
    thread.start()

    def stop() -> None:
        stopping.set()
        thread.join(timeout=30)

    return stop


def consenting_admin(practice: Practice) -> tuple[str, str]:
    """Who allows access at Xero's consent screen: a partner of the practice, as in `make demo`, so
    the connection has an owner in XPM's staff list (SPEC A6: else every run warns
    CONNECTION_OWNER_NOT_IN_XPM, and a newcomer is told to reconnect at the first run)."""
    owner = next(staff for staff in practice.partner_staff() if staff.email)
    return owner.name or "Practice Admin", owner.email or ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The xpm-sync REST API on the local stack")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        moto = stack.enter_context(MotoServer())
        sim = start_simulator()
        stack.callback(sim.stop)
        aws_env = {
            "AWS_ENDPOINT_URL": moto.url,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": "ap-southeast-2",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
        os.environ.update(aws_env)
        names = create_resources(
            endpoint_url=moto.url, app_client_id=APP_CLIENT_ID, app_client_secret=APP_CLIENT_SECRET
        )
        sim.register_app(APP_CLIENT_ID, APP_CLIENT_SECRET)
        practice = generate_practice(7, staff=10, clients=40, problem_share=0.1, tenant_name="Harbour & Co")
        sim.add_practice(practice)
        sim.set_consenting_user(*consenting_admin(practice))
        seed_demo_firm(boto3.resource("dynamodb", endpoint_url=moto.url).Table(names.active_table), practice)
        # Xero's redirect goes to the Active setup page (FRONTEND_URL), as in AWS.
        env = {**aws_env, **function_environment(names, xero_url=sim.url)}
        served = serve_api(args.host, args.port, env=env)
        stack.callback(served.stop)
        stack.callback(run_worker(names.queue_url))
        print(f"moto server (AWS)    {moto.url}")
        print(f"Xero/XPM simulator   {sim.url}")
        print(f"xpm-sync API         {served.url}   (Ctrl-C to stop)\n")
        print(_examples(served.url), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\nstopping")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
