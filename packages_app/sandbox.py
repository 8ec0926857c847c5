"""A local stand-in for Kombo's assessment API (`PUT`/`GET /v1/assessment/packages`,
`GET /v1/assessment/orders`).

Nothing in this project may reach Kombo, so newcomers (through `manage.py kombo_sandbox`) and the
tests (in-process with `KomboSandbox().start()`, or as a subprocess) talk to this server instead.
It follows the contract in `set-packages.md` and the facts in `NOTES.md`: the request and answer
shapes, the error shape and codes, the rate-limit and concurrency headers, replace-the-whole-list
semantics with "deleted" marking, the GET read-back, and the orders list (paged with `next`).

It is real HTTP on 127.0.0.1 (`http.server.ThreadingHTTPServer`, one daemon thread per
connection), HTTP/1.1 with keep-alive (every answer carries Content-Length), so a
`requests.Session` reuses its connections exactly as it would with Kombo. Standard library only:
no Django import here.

Beyond the contract, tests can script misbehaviour:
- `enqueue_fault(Fault(...))`: the next matching request (by integration id and, optionally, path)
  gets an arbitrary status/body/headers, a
  delay, or an abrupt connection reset; with `apply=True` the PUT is applied first ("Kombo did it
  but the answer was lost"). See `Fault` for the "slow server" rule.
- magic tool slugs in X-Integration-Id (`notfound:`, `syncpending:`, `inactive:`, `workday:`,
  `successfactors:`), `latency`, `rate_limit_per_second`, `concurrency_limit`, `extra_warnings`.
- `add_packages()` (packages only Kombo has), `add_orders()` (what `GET /assessment/orders`
  lists, `page_size` at most 250, `statuses`/`ids` filters, an opaque `next` cursor).
- `requests()`, `max_in_flight()`, `packages()`, `deleted_ids()` to assert what happened.

Processes that do not share memory with the sandbox drive it over HTTP under `/_sandbox/`
(no auth, never recorded as Kombo requests):
    POST /_sandbox/faults     JSON object (or list of objects) with Fault fields      -> 204
    POST /_sandbox/reset                                                               -> 204
    POST /_sandbox/warnings   {"messages": [...]} replaces extra_warnings              -> 204
    GET  /_sandbox/requests   recorded requests (Authorization shown as "Bearer ***")
    GET  /_sandbox/state      {integration_id: {"packages", "deleted", "max_in_flight"}}, and
                              "orders" where orders were seeded
    POST /_sandbox/packages   {"integration_id", "packages": [{"id", "name", "description",
                              "type"}]}: packages added at Kombo outside the product (its
                              dashboard, another system); `type`/`description` may be null -> 204
    POST /_sandbox/orders     {"integration_id", "orders": [{"package_id", "status", "id"}]} or
                              {"integration_id", "package_id", "count", "status"}: seed orders
                              (status OPEN unless given, ids generated)                  -> 204
    POST /_sandbox/webhooks/integration-created
                              send Kombo's signed `integration-created` webhook to the app -> 200

Webhooks (Kombo to the app): `send_webhook(...)` in-process, or the control endpoint above with a
JSON body (every field optional):
    {"id": "<tool:identifier>", "organization_name": "...", "category": "ASSESSMENT",
     "creator_email": null, "origin_id": null, "url": "...", "secret": "..."}
builds the event like Kombo's (`{"id": <fresh event id>, "type": "integration-created", "data":
{"id", "tool", "category", "end_user": {...}}}`; a random `recruitee:<id>` when `id` is absent),
signs the raw body (`X-Kombo-Signature` = base64url HMAC-SHA256 with the secret) and POSTs it to
`webhook_url` (`url`/`secret` override the configured ones, e.g. for a second app). The answer says
what was sent and what the app answered: {"url", "event", "signature", "status", "response"}; the
secret is never shown or logged. 400 when no URL or secret is configured or a field is wrong, 502
when the app cannot be reached. `deliver_webhook(body, signature=...)` posts raw bytes with any
(or no) signature, for tests of the app's refusals.

Order of checks for a Kombo request (the first that answers wins):
    queued fault -> rate limit (429) -> unknown path (404) / method (405) -> Authorization (401)
    -> X-Integration-Id (404) -> concurrency (429) -> magic slug -> GET / PUT (latency, then
    Content-Type and body validation: 400) -> success.

The API key is never logged or printed; with `verbose=True` one line per request goes to stderr
(method, path, integration id, status, duration).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import math
import re
import secrets
import socket
import socketserver
import string
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

__all__ = ["Fault", "RecordedRequest", "KomboSandbox", "PACKAGE_TYPES", "sign_webhook"]

PACKAGE_TYPES = ("BEHAVIORAL", "VIDEO_INTERVIEW", "SKILLS_TEST", "BACKGROUND_CHECK", "REFERENCE_CHECK")
PACKAGE_FIELDS = ("id", "type", "name", "description")
INTEGRATION_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+$")
ROUTE_SUFFIX = "/assessment/packages"
ORDERS_SUFFIX = "/assessment/orders"
ORDER_STATUSES = ("OPEN", "COMPLETED", "CANCELLED", "REJECTED")
ORDERS_PAGE_DEFAULT = 100
ORDERS_PAGE_MAX = 250
CONTROL_PREFIX = "/_sandbox/"
LONG_NAME = 50

# Without a configured rate limit the headers still show a plausible budget (never enforced).
DEFAULT_HEADER_LIMIT = 300
DEFAULT_HEADER_WINDOW = 60.0

INPUT_INVALID_TITLE = "The input is invalid."
WEBHOOK_SIGNATURE_HEADER = "X-Kombo-Signature"
WEBHOOK_TIMEOUT = 10.0
WEBHOOK_ANSWER_LIMIT = 2000  # characters of the app's answer shown back
_SIGN = object()  # deliver_webhook's default: sign the body with the webhook secret
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_ID_ALPHABET = string.ascii_letters + string.digits
MANUAL_ENTRY_TOOLS = {
    "workday": "Workday",
    "successfactors": "SAP SuccessFactors",
}


# --------------------------------------------------------------------------------------------
# Public data classes


@dataclass
class Fault:
    """One scripted answer for the next request that matches `integration_id` (None = any).

    Faults are consumed FIFO: each answers exactly one matching request, then is gone. A fault is
    served before any normal check (auth, rate limit, validation...):

    - `delay` seconds are slept first (the request counts as in flight meanwhile).
    - `reset=True`: the socket is then closed abruptly (SO_LINGER 0 -> TCP RST), no answer at all;
      the client sees a connection reset (`requests.ConnectionError`).
    - otherwise `status`, `headers` and `body` are sent as given: a dict body is JSON-encoded, a
      str is UTF-8 encoded, bytes are sent as they are, None means an empty body. Content-Type
      defaults to application/json (dict), text/html (str), application/octet-stream (bytes) and
      is omitted for an empty body; `content_type` overrides. Fault answers carry only these
      headers plus Content-Length (no ratelimit/concurrency headers unless you put them in
      `headers`), like an answer from a load balancer would. Framing headers you pass
      (Content-Length, Transfer-Encoding, Connection) are ignored.
    - `apply=True`: the request is first handled normally (for a valid PUT the packages are
      stored) and that answer is discarded; then the fault's delay and answer follow.

    "Slow server" rule: a fault with `status == 200`, `body is None` and `reset=False` is a pure
    delay. The sandbox sleeps `delay` seconds and then handles the request NORMALLY (the state is
    changed and the real answer is sent). `Fault(status=200, delay=1.6)` therefore provokes a client
    read timeout of 1 s while Kombo still does the work. To send a literally empty 200, use
    `body=b""`.
    """

    status: int = 500
    body: bytes | str | dict | list | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    delay: float = 0.0
    reset: bool = False
    integration_id: str | None = None
    apply: bool = False
    path: str | None = None  # only requests whose path ends with this (e.g. "/assessment/orders")

    @property
    def is_slow_server(self) -> bool:
        return self.body is None and not self.reset and self.status == 200

    def matches(self, integration_id: str | None, path: str = "") -> bool:
        if self.path is not None and not urlsplit(path).path.rstrip("/").endswith(self.path.rstrip("/")):
            return False
        return self.integration_id is None or self.integration_id == integration_id

    def encoded_body(self) -> tuple[bytes, str | None]:
        if self.body is None:
            return b"", None
        if isinstance(self.body, (dict, list)):
            return json.dumps(self.body).encode(), "application/json"
        if isinstance(self.body, str):
            return self.body.encode("utf-8"), "text/html; charset=utf-8"
        return bytes(self.body), ("application/octet-stream" if self.body else None)


@dataclass
class RecordedRequest:
    """A request as the sandbox received it (headers as sent, Authorization included).

    `started_at`/`ended_at` are `time.monotonic()` values: `started_at` when the request's headers
    and body had been read, `ended_at` when the sandbox finished handling it, just BEFORE the
    answer is written (so that a client which receives the answer and sends its next request at
    once can never see the two overlap). `ended_at` is None while in flight; `status` is None while
    in flight and for a reset connection.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    integration_id: str | None
    started_at: float
    ended_at: float | None = None
    status: int | None = None
    interaction_id: int = 0

    def redacted_headers(self) -> dict[str, str]:
        return {
            name: ("Bearer ***" if name.lower() == "authorization" else value)
            for name, value in self.headers.items()
        }

    def __repr__(self):  # never show the API key, e.g. in an assertion failure
        return (f"RecordedRequest(method={self.method!r}, path={self.path!r}, "
                f"headers={self.redacted_headers()!r}, body={self.body!r}, "
                f"integration_id={self.integration_id!r}, started_at={self.started_at!r}, "
                f"ended_at={self.ended_at!r}, status={self.status!r}, interaction_id={self.interaction_id!r})")

    def public_dict(self) -> dict:
        """JSON-safe form for `/_sandbox/requests`: the Authorization value is hidden."""
        headers = self.redacted_headers()
        return {
            "method": self.method,
            "path": self.path,
            "headers": headers,
            "integration_id": self.integration_id,
            "status": self.status,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "interaction_id": self.interaction_id,
            "body": self.body.decode("utf-8", errors="replace"),
        }


# --------------------------------------------------------------------------------------------
# Internals


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


_RESET = object()  # "close the connection abruptly" marker


class _InputInvalid(Exception):
    pass


def _now_iso() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _json_bytes(payload) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def _random_id(length: int = 24) -> str:
    """An id shaped like Kombo's (e.g. "5gjAtTsaAYUwqDAuSZbKHqcc")."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}, separators=(",", ":")).encode()).decode().rstrip("=")


def _cursor_offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset = payload["offset"]
    except (ValueError, TypeError, KeyError):
        raise _InputInvalid("cursor is not a cursor this API returned") from None
    if not isinstance(offset, int) or offset < 0:
        raise _InputInvalid("cursor is not a cursor this API returned")
    return offset


def sign_webhook(body: bytes, secret: str) -> str:
    """What Kombo sends in X-Kombo-Signature: base64url(HMAC-SHA256(raw body, secret)), padded."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def _validate_put_body(body: bytes) -> list[dict]:
    """The packages of a PUT body, or `_InputInvalid` naming the exact offending path."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _InputInvalid("body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise _InputInvalid("body must be a JSON object")
    if "packages" not in payload:
        raise _InputInvalid("packages is required")
    items = payload["packages"]
    if not isinstance(items, list):
        raise _InputInvalid("packages must be an array")
    packages, seen = [], {}
    for index, item in enumerate(items):
        where = f"packages[{index}]"
        if not isinstance(item, dict):
            raise _InputInvalid(f"{where} must be an object")
        for name in PACKAGE_FIELDS:
            if name not in item:
                raise _InputInvalid(f"{where}.{name} is required")
            if not isinstance(item[name], str):
                raise _InputInvalid(f"{where}.{name} must be a string")
        if item["type"] not in PACKAGE_TYPES:
            raise _InputInvalid(f"{where}.type must be one of {', '.join(PACKAGE_TYPES)}")
        if item["id"] in seen:
            raise _InputInvalid(
                f'{where}.id "{item["id"]}" is a duplicate of packages[{seen[item["id"]]}].id'
            )
        seen[item["id"]] = index
        packages.append({name: item[name] for name in PACKAGE_FIELDS})
    return packages


class _IntegrationState:
    def __init__(self):
        self.live: dict[str, dict] = {}        # id -> package, in the order of the last PUT
        self.deleted: dict[str, dict] = {}     # id -> last content, in the order they were deleted
        self.updated_at: dict[str, str] = {}

    def replace(self, packages: list[dict]) -> None:
        stamp = _now_iso()
        new_live = {}
        for package in packages:
            pid = package["id"]
            if self.live.get(pid) != package:  # new, changed, or coming back from deleted
                self.updated_at[pid] = stamp
            self.deleted.pop(pid, None)
            new_live[pid] = dict(package)
        for pid, old in self.live.items():
            if pid not in new_live:
                self.deleted[pid] = old
        self.live = new_live


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, sandbox, family):
        self.address_family = family
        self.sandbox = sandbox
        super().__init__(address, handler)

    def server_bind(self):  # HTTPServer's version does a (possibly slow) reverse DNS lookup
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[0], self.server_address[1]

    def handle_error(self, request, client_address):  # a client that went away is no news
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are small writes: no 40 ms delayed-ACK stalls

    def version_string(self):
        return "KomboSandbox/1.0"

    # -- plumbing ---------------------------------------------------------------------------

    def setup(self):
        super().setup()
        self._was_reset = False
        self.server.sandbox._track(self.connection, add=True)

    def finish(self):
        self.server.sandbox._track(self.connection, add=False)
        if self._was_reset:
            return
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format, *args):  # silence http.server's own logging
        pass

    def do_GET(self):
        self._dispatch()

    do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            return None
        if n < 0:
            return None
        return self.rfile.read(n) if n else b""

    def _dispatch(self):
        sandbox = self.server.sandbox
        try:
            body = self._read_body()
        except (ValueError, OSError):
            body = None
        if body is None:
            self.close_connection = True
            self._write(_Response(400, _json_bytes(sandbox._error_body(
                None, None, "The request could not be read (bad Content-Length or chunking).", None)),
                [("Content-Type", "application/json")]))
            return
        path = urlsplit(self.path).path
        if path.startswith(CONTROL_PREFIX) or path == CONTROL_PREFIX.rstrip("/"):
            self._write(sandbox._control(self.command, self.path, body))
            return
        response = sandbox._kombo_request(self.command, self.path, dict(self.headers.items()), body)
        if response is _RESET:
            self._reset()
        else:
            self._write(response)

    def _write(self, response: _Response):
        try:
            self.send_response(response.status)
            for name, value in response.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and response.body:
                self.wfile.write(response.body)
            self.wfile.flush()
        except OSError:  # the client went away (e.g. it timed out): nothing to tell it
            self.close_connection = True

    def _reset(self):
        self._was_reset = True
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.rfile.close()  # drop makefile's reference so that close() really closes now
        finally:
            self.connection.close()


# --------------------------------------------------------------------------------------------
# The sandbox


class KomboSandbox:
    """Kombo's assessment-packages API on 127.0.0.1. See the module docstring.

    `latency`, `extra_warnings`, `concurrency_limit`, `warn_long_names` and `verbose` are plain
    attributes that may be changed while serving.

    Rate limit (`rate_limit_per_second`): a FIXED 1-second window over all Kombo requests (every
    integration together). The window admits `max(1, round(rate_limit_per_second))` requests; any
    further request in the same window gets 429 PLATFORM.RATE_LIMIT_EXCEEDED with `Retry-After`
    (whole seconds, at least 1). Rejected requests do not use up the budget. Without a rate limit
    nothing is enforced and the headers describe a notional 300 requests per 60 s window.

    Concurrency: a request that would make more than `concurrency_limit` requests in flight for
    one integration gets 429 PLATFORM.CONCURRENCY_LIMIT_EXCEEDED (no Retry-After). Every request,
    including rejected ones, counts as in flight while it is handled (delays and latency included),
    which is what `max_in_flight` measures.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None,
                 latency: float = 0.0, rate_limit_per_second: float | None = None,
                 concurrency_limit: int = 30, warn_long_names: bool = True, verbose: bool = False,
                 webhook_url: str | None = None, webhook_secret: str | None = None):
        self._api_key = api_key
        # Where send_webhook() posts and the secret it signs with (never shown: see __repr__).
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.latency = latency
        self.rate_limit_per_second = rate_limit_per_second
        self.concurrency_limit = concurrency_limit
        self.warn_long_names = warn_long_names
        self.verbose = verbose
        self.extra_warnings: list[str] = []

        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._faults: list[Fault] = []
        self._requests: list[RecordedRequest] = []
        self._states: dict[str, _IntegrationState] = {}
        self._orders: dict[str, list[dict]] = {}
        self._in_flight: dict[str | None, int] = {}
        self._max_in_flight: dict[str | None, int] = {}
        self._in_flight_total = 0
        self._max_in_flight_total = 0
        self._counter = 0
        self._window_start = float("-inf")  # the first request opens the first window
        self._window_count = 0
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self._serving = False
        self._closed = False

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._httpd = _Server((host, port), _Handler, self, family)
        self.host = host
        self.port = self._httpd.server_address[1]

    def __repr__(self):
        return f"<KomboSandbox {self.url}>"  # never the key

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def base_url(self) -> str:
        """`url` without `/v1`: where `/_sandbox/...` lives."""
        return self.url[: -len("/v1")]

    def start(self) -> "KomboSandbox":
        if self._thread is None:
            self._serving = True
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                name=f"kombo-sandbox-{self.port}", daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until `stop()` (from another thread) or an exception
        such as KeyboardInterrupt; the caller should call `stop()` afterwards."""
        self._serving = True
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self._serving = False

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()  # wakes delay/latency sleeps
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
        elif self._serving:
            self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # idle keep-alive connections would otherwise linger
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "KomboSandbox":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _track(self, conn, *, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def _sleep(self, seconds: float) -> None:
        if seconds and seconds > 0:
            self._stopping.wait(seconds)

    # -- scripting and inspection -------------------------------------------------------------

    def enqueue_fault(self, fault: Fault) -> None:
        if not isinstance(fault, Fault):
            raise TypeError("enqueue_fault takes a Fault")
        with self._lock:
            self._faults.append(fault)

    def reset(self) -> None:
        """Forget state, queued faults, recorded requests, extra warnings and in-flight maxima."""
        with self._lock:
            self._faults.clear()
            self._requests.clear()
            self._states.clear()
            self._orders.clear()
            self.extra_warnings = []
            self._max_in_flight = {k: v for k, v in self._in_flight.items() if v}
            self._max_in_flight_total = self._in_flight_total
            self._window_start = float("-inf")
            self._window_count = 0

    def packages(self, integration_id: str) -> list[dict]:
        with self._lock:
            state = self._states.get(integration_id)
            return [dict(p) for p in state.live.values()] if state else []

    def deleted_ids(self, integration_id: str) -> list[str]:
        with self._lock:
            state = self._states.get(integration_id)
            return list(state.deleted) if state else []

    def requests(self, method: str | None = None, integration_id: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [
                RecordedRequest(**{f.name: getattr(r, f.name) for f in fields(r)} | {"headers": dict(r.headers)})
                for r in self._requests
                if (method is None or r.method == method.upper())
                and (integration_id is None or r.integration_id == integration_id)
            ]

    def max_in_flight(self, integration_id: str | None = None) -> int:
        with self._lock:
            if integration_id is None:
                return self._max_in_flight_total
            return self._max_in_flight.get(integration_id, 0)

    def state(self) -> dict:
        """What `/_sandbox/state` answers."""
        with self._lock:
            ids = [k for k in self._states] + [k for k in self._max_in_flight if k and k not in self._states]
            ids += [k for k in self._orders if k not in ids]
            state = {
                iid: {
                    "packages": self.packages(iid),
                    "deleted": self.deleted_ids(iid),
                    "max_in_flight": self._max_in_flight.get(iid, 0),
                }
                for iid in ids
            }
            for iid, orders in self._orders.items():  # only where orders were seeded
                state[iid]["orders"] = [dict(o) for o in orders]
            return state

    def add_packages(self, integration_id: str, packages: list[dict]) -> None:
        """Packages Kombo holds that the product never sent (added in Kombo's dashboard or by
        another system): listed by GET like any other, marked deleted by the next PUT without
        them. `type` and `description` may be None (GET shows them as null)."""
        if not isinstance(integration_id, str) or not INTEGRATION_ID_RE.match(integration_id):
            raise ValueError('integration_id must be a Kombo integration id "<tool>:<identifier>"')
        if not isinstance(packages, list):
            raise ValueError("packages must be a list")
        checked = []
        for index, item in enumerate(packages):
            if not isinstance(item, dict):
                raise ValueError(f"packages[{index}] must be an object")
            unknown = set(item) - set(PACKAGE_FIELDS)
            if unknown:
                raise ValueError(f"packages[{index}] has unknown fields: {', '.join(sorted(unknown))}")
            for name in ("id", "name"):
                if not isinstance(item.get(name), str) or not item[name]:
                    raise ValueError(f"packages[{index}].{name} must be a non-empty string")
            for name in ("type", "description"):
                if item.get(name) is not None and not isinstance(item[name], str):
                    raise ValueError(f"packages[{index}].{name} must be a string or null")
            checked.append({name: item.get(name) for name in PACKAGE_FIELDS})
        with self._lock:
            state = self._states.setdefault(integration_id, _IntegrationState())
            stamp = _now_iso()
            for package in checked:
                state.deleted.pop(package["id"], None)
                state.live[package["id"]] = package
                state.updated_at[package["id"]] = stamp

    def add_orders(self, integration_id: str, orders: list[dict] | None = None, *,
                   package_id: str | None = None, count: int = 0, status: str = "OPEN") -> list[dict]:
        """Seed orders for `GET /assessment/orders`: `orders` as [{"package_id", "status", "id"}]
        (status OPEN and a Kombo-like id unless given), or `count` orders of `package_id`.
        Returns the orders added, in Kombo's shape."""
        if not isinstance(integration_id, str) or not INTEGRATION_ID_RE.match(integration_id):
            raise ValueError('integration_id must be a Kombo integration id "<tool>:<identifier>"')
        if orders is not None and not isinstance(orders, list):
            raise ValueError("orders must be a list")
        items = list(orders or [])
        if package_id is not None:
            if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 100_000:
                raise ValueError("count must be a whole number from 0 to 100000")
            items += [{"package_id": package_id, "status": status}] * count
        added = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValueError(f"orders[{index}] must be an object")
            unknown = set(item) - {"id", "package_id", "status"}
            if unknown:
                raise ValueError(f"orders[{index}] has unknown fields: {', '.join(sorted(unknown))}")
            if not isinstance(item.get("package_id"), str) or not item["package_id"]:
                raise ValueError(f"orders[{index}].package_id must be a non-empty string")
            order_status = item.get("status", "OPEN")
            if order_status not in ORDER_STATUSES:
                raise ValueError(f"orders[{index}].status must be one of {', '.join(ORDER_STATUSES)}")
            order_id = item.get("id") or _random_id()
            n = len(added) + 1
            added.append({
                "id": order_id, "package_id": item["package_id"], "status": order_status,
                "candidate": {"remote_id": f"c-{order_id[:6]}", "email": f"candidate{n}@example.com",
                              "first_name": "Sandbox", "last_name": f"Candidate {n}", "phone": None},
                "application": {"remote_id": f"a-{order_id[:6]}"},
                "job": {"remote_id": "j-1", "name": "Sandbox job", "job_code": None, "description": None,
                        "location": None, "hiring_team": []},
            })
        with self._lock:
            self._orders.setdefault(integration_id, []).extend(added)
        return added

    # -- webhooks (Kombo to the app) --------------------------------------------------------------

    @staticmethod
    def integration_created_event(*, id: str | None = None, organization_name: str | None = None,
                                  category: str | None = "ASSESSMENT", creator_email: str | None = None,
                                  origin_id: str | None = None, event_id: str | None = None) -> dict:
        """Kombo's `integration-created` event (NOTES.md "Webhooks", examples.json), with a fresh
        event id unless `event_id` is given and a random `recruitee:<id>` unless `id` is given."""
        if id is None:
            id = f"recruitee:{_random_id()}"
        if not isinstance(id, str) or not INTEGRATION_ID_RE.match(id):
            raise ValueError('id must be a Kombo integration id "<tool>:<identifier>"')
        for name, value in (("organization_name", organization_name), ("category", category),
                            ("creator_email", creator_email), ("origin_id", origin_id),
                            ("event_id", event_id)):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string or null")
        tool = id.split(":", 1)[0]
        return {
            "id": event_id or _random_id(),
            "type": "integration-created",
            "data": {
                "id": id,
                "tool": tool,
                "category": category,
                "end_user": {
                    "organization_name": organization_name if organization_name is not None
                    else f"Sandbox customer {id.split(':', 1)[1][:6]}",
                    "creator_email": creator_email,
                    "origin_id": origin_id,
                },
            },
        }

    def send_webhook(self, *, url: str | None = None, secret: str | None = None, **event_fields) -> dict:
        """Build an `integration-created` event (fields of `integration_created_event`), sign it
        and POST it to the app. Returns {"url", "event", "signature", "status", "response"};
        raises ValueError for a wrong field or missing configuration, OSError (urllib's URLError)
        when the app cannot be reached."""
        event = self.integration_created_event(**event_fields)
        sent = self.deliver_webhook(_json_bytes(event), url=url, secret=secret)
        return {"url": sent["url"], "event": event, "signature": sent["signature"],
                "status": sent["status"], "response": sent["response"]}

    def deliver_webhook(self, body: bytes, *, url: str | None = None, secret: str | None = None,
                        signature=_SIGN, headers: dict[str, str] | None = None,
                        timeout: float = WEBHOOK_TIMEOUT) -> dict:
        """POST raw `body` to the app as Kombo would. `signature`: by default the body signed with
        the secret; None sends no X-Kombo-Signature; a str is sent as it is (tests of refusals).
        Returns {"url", "signature", "status", "response"} (the app's answer: JSON if it is JSON,
        else its text, cut to 2000 characters)."""
        url = url or self.webhook_url
        if not url:
            raise ValueError("no webhook URL: start the sandbox with --webhook-url (webhook_url=...) "
                             'or pass "url"')
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("the webhook URL must be http:// or https://")
        if signature is _SIGN:
            secret = secret if secret is not None else self.webhook_secret
            if not secret:
                raise ValueError("no webhook secret: start the sandbox with --webhook-secret-env NAME "
                                 '(webhook_secret=...) or pass "secret"')
            signature = sign_webhook(body, secret)
        sent_headers = {"Content-Type": "application/json", "User-Agent": "KomboSandbox/1.0"}
        if signature is not None:
            sent_headers[WEBHOOK_SIGNATURE_HEADER] = signature
        sent_headers.update(headers or {})
        request = urllib.request.Request(url, data=body, headers=sent_headers, method="POST")
        started = time.monotonic()
        try:
            # Never through a proxy from the environment: the app is local.
            with _DIRECT.open(request, timeout=timeout) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as exc:  # 4xx/5xx: an answer all the same
            status, raw = exc.code, exc.read()
            exc.close()
        if self.verbose:
            ms = (time.monotonic() - started) * 1000
            print(f"[kombo-sandbox] webhook POST {url} ({len(body)} bytes) -> {status} ({ms:.0f} ms)",
                  file=sys.stderr, flush=True)
        text = raw.decode("utf-8", errors="replace")
        try:
            response = json.loads(text)
        except ValueError:
            response = text[:WEBHOOK_ANSWER_LIMIT]
        return {"url": url, "signature": signature, "status": status, "response": response}

    # -- one Kombo request ----------------------------------------------------------------------

    def _kombo_request(self, method: str, raw_path: str, headers: dict[str, str], body: bytes):
        lower = {k.lower(): v for k, v in headers.items()}
        integration_id = lower.get("x-integration-id")
        with self._lock:
            self._counter += 1
            record = RecordedRequest(
                method=method, path=raw_path, headers=dict(headers), body=body,
                integration_id=integration_id, started_at=time.monotonic(), interaction_id=self._counter,
            )
            self._requests.append(record)
            self._in_flight[integration_id] = in_flight = self._in_flight.get(integration_id, 0) + 1
            self._max_in_flight[integration_id] = max(self._max_in_flight.get(integration_id, 0), in_flight)
            self._in_flight_total += 1
            self._max_in_flight_total = max(self._max_in_flight_total, self._in_flight_total)
            fault = next((f for f in self._faults if f.matches(integration_id, raw_path)), None)
            if fault is not None:
                self._faults.remove(fault)

        outcome = None
        try:
            outcome = self._answer(record, lower, fault, in_flight)
        except Exception as exc:  # a sandbox bug must still answer in Kombo's shape
            outcome = self._error(record, 500, "PLATFORM.UNKNOWN_ERROR", "Unknown error.",
                                  f"The sandbox failed: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                record.ended_at = time.monotonic()
                record.status = outcome.status if isinstance(outcome, _Response) else None
                self._in_flight[integration_id] -= 1
                self._in_flight_total -= 1
            if self.verbose:
                ms = (record.ended_at - record.started_at) * 1000
                status = record.status if record.status is not None else "RESET"
                print(f"[kombo-sandbox] {method} {raw_path} {integration_id or '-'} -> {status} ({ms:.0f} ms)",
                      file=sys.stderr, flush=True)
        return outcome

    def _answer(self, record: RecordedRequest, headers: dict[str, str], fault: Fault | None, in_flight: int):
        if fault is not None and fault.is_slow_server:
            self._sleep(fault.delay)
            fault = None
        if fault is None:
            return self._handle(record, headers, in_flight)
        if fault.apply:
            self._handle(record, headers, in_flight)
        self._sleep(fault.delay)
        if fault.reset:
            return _RESET
        body, default_type = fault.encoded_body()
        out = [(k, str(v)) for k, v in fault.headers.items()
               if k.lower() not in ("content-length", "transfer-encoding", "connection")]
        has_type = any(k.lower() == "content-type" for k, _ in out)
        content_type = fault.content_type or (None if has_type else default_type)
        if content_type:
            out = [(k, v) for k, v in out if k.lower() != "content-type"] + [("Content-Type", content_type)]
        return _Response(fault.status, body, out)

    def _handle(self, record: RecordedRequest, headers: dict[str, str], in_flight: int) -> _Response:
        """Normal handling. `in_flight`: requests in flight for this integration when this one
        arrived, itself included (decided at arrival, so simultaneous arrivals cannot all fail)."""
        limited = self._rate_limit()
        if limited is not None:
            return self._error(record, 429, "PLATFORM.RATE_LIMIT_EXCEEDED", "Rate limit exceeded.",
                               "You have exceeded the rate limit. Please retry later.",
                               extra_headers=[("Retry-After", str(limited))])

        path = urlsplit(record.path).path.rstrip("/")
        route = next((r for r in (ROUTE_SUFFIX, ORDERS_SUFFIX) if path.endswith(r)), None)
        if route is None:
            return self._error(record, 404, None, None, f"No route for {record.method} {path or '/'}.")
        allowed = ("GET", "PUT") if route == ROUTE_SUFFIX else ("GET",)
        if record.method not in allowed:
            return self._error(record, 405, None, None,
                               f"Method {record.method} is not allowed on {route}.",
                               extra_headers=[("Allow", ", ".join(allowed))])

        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        valid = scheme.lower() == "bearer" and bool(token)
        if valid and self._api_key is not None:
            valid = hmac.compare_digest(token.encode(), self._api_key.encode())
        if not valid:
            return self._error(record, 401, "PLATFORM.AUTHENTICATION_INVALID", "The API key is invalid.",
                               "The Authorization header must be \"Bearer <API key>\" with a valid API key.")

        integration_id = record.integration_id
        if not integration_id or not INTEGRATION_ID_RE.match(integration_id):
            what = "is missing" if not integration_id else "is not a valid integration id"
            return self._error(record, 404, "PLATFORM.INTEGRATION_NOT_FOUND", "The integration was not found.",
                               f"The X-Integration-Id header {what} (expected \"<tool>:<id>\").")

        if in_flight > self.concurrency_limit:
            return self._error(record, 429, "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED", "Concurrency limit exceeded.",
                               f"More than {self.concurrency_limit} requests are in flight for this integration.")

        tool = integration_id.split(":", 1)[0].lower()
        if tool == "notfound":
            return self._error(record, 404, "PLATFORM.INTEGRATION_NOT_FOUND", "The integration was not found.",
                               f"No integration with the id \"{integration_id}\" exists in this environment.")
        if tool == "syncpending":
            return self._error(record, 409, "INTEGRATION.SETUP_SYNC_PENDING",
                               "The integration's initial sync is still running.",
                               "This integration is still running its first sync. Please retry once it has finished.")
        if tool == "inactive":
            return self._error(record, 403, "INTEGRATION.INACTIVE", "The integration is inactive.",
                               "This integration is inactive. The customer must reconnect it.")

        if route == ORDERS_SUFFIX:
            return self._get_orders(record, integration_id)
        if record.method == "GET":
            return self._get(record, integration_id)
        return self._put(record, headers, integration_id, tool)

    def _get(self, record, integration_id) -> _Response:
        with self._lock:
            state = self._states.get(integration_id)
            packages = [
                {"id": p["id"], "name": p["name"], "description": p["description"],
                 "updated_at": state.updated_at.get(p["id"]), "type": p["type"]}
                for p in state.live.values()
            ] if state else []
        return self._json(record, 200, {"status": "success", "data": {"packages": packages}})

    def _get_orders(self, record, integration_id) -> _Response:
        """One page of the integration's orders, oldest first. The cursor is opaque to clients
        (base64url of {"offset": n}, as in examples.json); a wrong one is a 400."""
        query = parse_qs(urlsplit(record.path).query, keep_blank_values=True)

        def one(name, default=None):
            values = query.get(name)
            return values[-1] if values else default

        try:
            statuses = [s.strip() for s in (one("statuses") or "").split(",") if s.strip()]
            bad = [s for s in statuses if s not in ORDER_STATUSES]
            if bad:
                raise _InputInvalid(f"statuses must be a comma-separated list of {', '.join(ORDER_STATUSES)} "
                                    f"(got {', '.join(bad)})")
            raw_size = one("page_size", str(ORDERS_PAGE_DEFAULT))
            if not raw_size.isdigit() or not 1 <= int(raw_size) <= ORDERS_PAGE_MAX:
                raise _InputInvalid(f"page_size must be a whole number from 1 to {ORDERS_PAGE_MAX}")
            size = int(raw_size)
            offset = _cursor_offset(one("cursor"))
            ids = {i.strip() for i in (one("ids") or "").split(",") if i.strip()}
        except _InputInvalid as exc:
            return self._error(record, 400, "PLATFORM.INPUT_INVALID", INPUT_INVALID_TITLE, str(exc))
        with self._lock:
            matching = [dict(o) for o in self._orders.get(integration_id, [])
                        if (not statuses or o["status"] in statuses) and (not ids or o["id"] in ids)]
        page = matching[offset:offset + size]
        following = _cursor(offset + size) if offset + size < len(matching) else None
        return self._json(record, 200, {"status": "success", "data": {"next": following, "results": page}})

    def _put(self, record, headers, integration_id, tool) -> _Response:
        self._sleep(self.latency)
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        try:
            if media_type != "application/json":
                raise _InputInvalid(
                    f"Content-Type must be application/json (got {media_type or 'none'})")
            packages = _validate_put_body(record.body)
        except _InputInvalid as exc:
            return self._error(record, 400, "PLATFORM.INPUT_INVALID", INPUT_INVALID_TITLE, str(exc))

        warnings = []
        if self.warn_long_names:
            warnings += [f'Package "{p["id"]}": names longer than {LONG_NAME} characters are cut in this ATS.'
                         for p in packages if len(p["name"]) > LONG_NAME]
        warnings += [str(m) for m in list(self.extra_warnings)]
        if tool in MANUAL_ENTRY_TOOLS:
            warnings.append(
                f"{MANUAL_ENTRY_TOOLS[tool]} cannot take packages through the API: the customer must enter "
                "them by hand in the ATS (Kombo can export a CSV of names and reference ids)."
            )
        with self._lock:
            self._states.setdefault(integration_id, _IntegrationState()).replace(packages)
        return self._json(record, 200, {"status": "success", "data": {},
                                        "warnings": [{"message": m} for m in warnings]})

    # -- answers --------------------------------------------------------------------------------

    def _rate_limit(self) -> int | None:
        """Count this request in the window; the Retry-After seconds if it must be refused."""
        if self.rate_limit_per_second is None:
            return None
        with self._lock:
            now = time.monotonic()
            if now - self._window_start >= 1.0:
                self._window_start, self._window_count = now, 0
            if self._window_count >= self._rate_capacity():
                return max(1, math.ceil(self._window_start + 1.0 - now))
            self._window_count += 1
            return None

    def _rate_capacity(self) -> int:
        return max(1, round(self.rate_limit_per_second))

    def _limit_headers(self, integration_id) -> list[tuple[str, str]]:
        with self._lock:
            now = time.monotonic()
            if self.rate_limit_per_second is None:
                window, limit = DEFAULT_HEADER_WINDOW, DEFAULT_HEADER_LIMIT
                if now - self._window_start >= window:
                    self._window_start, self._window_count = now, 0
                self._window_count += 1  # notional budget: counted, never enforced
            else:
                window, limit = 1.0, self._rate_capacity()
                if now - self._window_start >= window:
                    self._window_start, self._window_count = now, 0
            remaining = max(0, limit - self._window_count)
            reset = max(0, math.ceil(self._window_start + window - now))
            in_flight = self._in_flight.get(integration_id, 0)
        return [
            ("ratelimit-limit", str(limit)),
            ("ratelimit-remaining", str(remaining)),
            ("ratelimit-reset", str(reset)),
            ("Concurrency-Limit", str(self.concurrency_limit)),
            ("Concurrency-Remaining", str(max(0, self.concurrency_limit - in_flight))),
        ]

    def _json(self, record, status, payload, extra_headers=()) -> _Response:
        headers = [("Content-Type", "application/json")] + self._limit_headers(record.integration_id)
        return _Response(status, _json_bytes(payload), headers + list(extra_headers))

    def _log_url(self, record) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/logs?interactionId={record.interaction_id}"

    @staticmethod
    def _error_body(code, title, message, log_url) -> dict:
        return {"status": "error", "error": {"code": code, "title": title, "message": message, "log_url": log_url}}

    def _error(self, record, status, code, title, message, extra_headers=()) -> _Response:
        return self._json(record, status, self._error_body(code, title, message, self._log_url(record)),
                          extra_headers)

    # -- control endpoints ----------------------------------------------------------------------

    def _control(self, method: str, raw_path: str, body: bytes) -> _Response:
        path = urlsplit(raw_path).path.rstrip("/")
        json_type = [("Content-Type", "application/json")]

        def bad(message, status=400):
            return _Response(status, _json_bytes(self._error_body(None, None, message, None)), json_type)

        def ok(payload=None):
            if payload is None:
                return _Response(204)
            return _Response(200, _json_bytes(payload), json_type)

        def load():
            try:
                return json.loads(body.decode("utf-8")) if body.strip() else {}
            except (UnicodeDecodeError, ValueError):
                raise _InputInvalid("body is not valid JSON") from None

        routes = {
            "/_sandbox/faults": "POST", "/_sandbox/reset": "POST", "/_sandbox/warnings": "POST",
            "/_sandbox/requests": "GET", "/_sandbox/state": "GET",
            "/_sandbox/webhooks/integration-created": "POST",
            "/_sandbox/packages": "POST", "/_sandbox/orders": "POST",
        }
        if path not in routes:
            return bad(f"No sandbox control endpoint {path}.", 404)
        if method != routes[path]:
            return bad(f"Use {routes[path]} for {path}.", 405)
        try:
            if path == "/_sandbox/faults":
                payload = load()
                items = payload if isinstance(payload, list) else [payload]
                allowed = {f.name for f in fields(Fault)}
                faults = []
                for item in items:
                    if not isinstance(item, dict):
                        raise _InputInvalid("a fault must be a JSON object")
                    unknown = set(item) - allowed
                    if unknown:
                        raise _InputInvalid(f"unknown Fault fields: {', '.join(sorted(unknown))}")
                    try:
                        faults.append(Fault(**item))
                    except TypeError as exc:
                        raise _InputInvalid(str(exc)) from None
                for fault in faults:
                    self.enqueue_fault(fault)
                return ok()
            if path == "/_sandbox/reset":
                self.reset()
                return ok()
            if path == "/_sandbox/warnings":
                payload = load()
                messages = payload.get("messages") if isinstance(payload, dict) else None
                if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
                    raise _InputInvalid('expected {"messages": ["...", ...]}')
                self.extra_warnings = list(messages)
                return ok()
            if path == "/_sandbox/webhooks/integration-created":
                payload = load()
                if not isinstance(payload, dict):
                    raise _InputInvalid("expected a JSON object")
                allowed = {"id", "organization_name", "category", "creator_email", "origin_id", "url", "secret"}
                unknown = set(payload) - allowed
                if unknown:
                    raise _InputInvalid(f"unknown fields: {', '.join(sorted(unknown))} "
                                        f"(allowed: {', '.join(sorted(allowed))})")
                for name in ("url", "secret"):
                    if payload.get(name) is not None and not isinstance(payload[name], str):
                        raise _InputInvalid(f"{name} must be a string")
                try:
                    return ok(self.send_webhook(**payload))
                except ValueError as exc:
                    raise _InputInvalid(str(exc)) from None
                except (OSError, http.client.HTTPException) as exc:  # refused, timed out, no HTTP answer
                    reason = getattr(exc, "reason", exc)
                    url = payload.get("url") or self.webhook_url
                    return bad(f"The app at {url} could not be reached: {type(reason).__name__}: {reason}", 502)
            if path in ("/_sandbox/packages", "/_sandbox/orders"):
                payload = load()
                if not isinstance(payload, dict):
                    raise _InputInvalid("expected a JSON object")
                allowed = ({"integration_id", "packages"} if path == "/_sandbox/packages"
                           else {"integration_id", "orders", "package_id", "count", "status"})
                unknown = set(payload) - allowed
                if unknown:
                    raise _InputInvalid(f"unknown fields: {', '.join(sorted(unknown))} "
                                        f"(allowed: {', '.join(sorted(allowed))})")
                try:
                    if path == "/_sandbox/packages":
                        self.add_packages(payload.get("integration_id"), payload.get("packages"))
                    else:
                        self.add_orders(payload.get("integration_id"), payload.get("orders"),
                                        package_id=payload.get("package_id"), count=payload.get("count", 0),
                                        status=payload.get("status", "OPEN"))
                except ValueError as exc:
                    raise _InputInvalid(str(exc)) from None
                return ok()
            if path == "/_sandbox/requests":
                return ok([r.public_dict() for r in self.requests()])
            return ok(self.state())
        except _InputInvalid as exc:
            return bad(str(exc))

