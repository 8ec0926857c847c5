"""HTTP client for Kombo's assessment API (the package list: PUT and GET; the orders list: GET),
and the classification of its answers.

It knows HTTP and Kombo's contract (`set-packages.md`, `NOTES.md`) and nothing else: no Django, no
database, no retries. Every answer that is not a success becomes a `KomboError` whose `kind` says
what to do next (retry soon, wait for the customer's first sync, or stop and tell staff).

Redirects are never followed: `requests` would turn a PUT into a GET on a 302 (and report Kombo's
GET answer as a publish) or drop the body on a 301, so any 3xx answer is a permanent error naming
its `Location`. A request that cannot even be built (a bad URL, a header with a line break or a
character outside Latin-1) is permanent too: sending it again cannot help, a person must fix the
settings. Error codes decide the kind; a null, unknown or non-string code falls back to the HTTP
status (`classify`).
"""
import email.utils
import enum
import ipaddress
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

import requests

LIMIT_HEADERS = (
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "concurrency-limit",
    "concurrency-remaining",
    "retry-after",
)


class ErrorKind(enum.Enum):
    TRANSIENT = "transient"            # retry with backoff
    SYNC_PENDING = "sync_pending"      # clears by itself in hours: retry slowly
    PERMANENT = "permanent"            # a person must act; do not retry
    NO_AUTO_RETRY = "no_auto_retry"    # Kombo advises no automatic retry: fail, offer re-publish


TRANSIENT_CODES = {
    "PLATFORM.RATE_LIMIT_EXCEEDED",
    "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED",
    "REMOTE.RATE_LIMIT_EXCEEDED",
    "REMOTE.SERVICE_UNAVAILABLE",
}
NO_AUTO_RETRY_CODES = {
    "PLATFORM.UNKNOWN_ERROR",
    "REMOTE.UNKNOWN_HTTP_ERROR",
    "PLATFORM.TASK_TIMED_OUT",
}
PERMANENT_CODES = {
    "PLATFORM.INPUT_INVALID",
    "REMOTE.INPUT_INVALID",
    "PLATFORM.AUTHENTICATION_INVALID",
    "PLATFORM.IP_NOT_WHITELISTED",
    "PLATFORM.INTEGRATION_NOT_FOUND",
}
# INTEGRATION.* codes documented as "permanent until a person acts" (NOTES.md). An INTEGRATION.*
# code not listed here is unknown like any other, and falls back to the HTTP status.
INTEGRATION_PERMANENT_CODES = {
    "INTEGRATION.PERMISSION_MISSING",
    "INTEGRATION.AUTHENTICATION_INVALID",
    "INTEGRATION.INACTIVE",
    "INTEGRATION.QA_FAILED",
    "INTEGRATION.SETUP_INCOMPLETE",
    "INTEGRATION.ACTION_NOT_AVAILABLE",
    "INTEGRATION.ACTION_DISABLED",
}
INTEGRATION_PERMANENT_PREFIXES = ("INTEGRATION.MODEL_",)
SYNC_PENDING_CODE = "INTEGRATION.SETUP_SYNC_PENDING"
TRANSIENT_HTTP_STATUSES = {429, 502, 503, 504}
ORDERS_PAGE_MAX = 250  # Kombo's largest page of orders (NOTES.md)
LOCATION_LIMIT = 300  # characters of a redirect's Location kept in the reason

# How much longer than the normal backoff a kind of transient error should wait (NOTES.md).
BACKOFF_BASE_OVERRIDES = {
    "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED": 1.0,   # "back off from about 1 s"
}
LONGER_BACKOFF_CODES = {"REMOTE.RATE_LIMIT_EXCEEDED", "REMOTE.SERVICE_UNAVAILABLE"}


def is_loopback_host(host):
    """localhost or a loopback address: where plain http stays on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_safe_url(url):
    """https to any host, or plain http to a loopback host (the sandbox): the one rule for the
    base URL the key is sent to and for every link to Kombo shown to staff."""
    parts = urlsplit(str(url or ""))
    host = parts.hostname or ""
    return (parts.scheme == "https" and bool(host)) or (parts.scheme == "http" and is_loopback_host(host))


def classify(code, http_status):
    """What to do with an error: a known `error.code` decides whatever the HTTP status; a null,
    unknown or non-string code falls back to the status (429/502/503/504 transient, any other
    permanent). No status at all (no answer: connection error, timeout) is transient."""
    if isinstance(code, str):
        if code == SYNC_PENDING_CODE:
            return ErrorKind.SYNC_PENDING
        if code in TRANSIENT_CODES:
            return ErrorKind.TRANSIENT
        if code in NO_AUTO_RETRY_CODES:
            return ErrorKind.NO_AUTO_RETRY
        if (code in PERMANENT_CODES or code in INTEGRATION_PERMANENT_CODES
                or code.startswith(INTEGRATION_PERMANENT_PREFIXES)):
            return ErrorKind.PERMANENT
    # code null, not a string, or a code Kombo added after this was written.
    if http_status is None or http_status in TRANSIENT_HTTP_STATUSES:
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


@dataclass
class KomboSuccess:
    http_status: int
    warnings: list
    body_text: str
    limit_headers: dict
    elapsed: float


@dataclass
class OrdersPage:
    results: list          # order objects as Kombo sends them (`package_id` among their fields)
    next: str | None       # the cursor of the next page; None on the last page
    elapsed: float = 0.0
    limit_headers: dict = field(default_factory=dict)


@dataclass
class KomboError(Exception):
    kind: ErrorKind
    reason: str                       # plain words for staff and logs; never holds the key
    http_status: int | None = None
    code: str | None = None
    title: str | None = None
    message: str | None = None
    log_url: str | None = None
    body_text: str = ""
    limit_headers: dict = field(default_factory=dict)
    retry_after: float | None = None  # seconds Kombo asked us to wait (Retry-After / ratelimit-reset)
    elapsed: float = 0.0

    def __str__(self):
        return self.reason


def parse_retry_after(value, now=None):
    """Seconds from a Retry-After header: delta-seconds or an HTTP date. None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def _limit_headers(response):
    return {name: response.headers[name] for name in LIMIT_HEADERS if name in response.headers}


def _retry_after(response):
    seconds = parse_retry_after(response.headers.get("retry-after"))
    if seconds is None and response.status_code == 429:
        seconds = parse_retry_after(response.headers.get("ratelimit-reset"))
    return seconds


def _text_excerpt(text, limit=300):
    """A short, tag-free excerpt of a non-JSON body (an HTML error page), for the stored reason."""
    plain = re.sub(r"<[^>]+>", " ", text or "")
    plain = re.sub(r"\s+", " ", plain).strip()
    return plain[:limit] + ("…" if len(plain) > limit else "")


def _session():
    """A requests Session that looks at the environment only if a proxy is configured there.
    Otherwise requests would read the proxy variables and ~/.netrc again on every call (a
    measurable share of a publish's CPU), and a netrc entry for Kombo's host would replace the
    bearer token with Basic auth."""
    session = requests.Session()
    session.trust_env = bool(requests.utils.getproxies())
    return session


class KomboClient:
    """One method per Kombo call. Reuse one instance (and its connection pool) per process."""

    def __init__(self, *, api_key, connect_timeout=5.0, read_timeout=30.0, session=None):
        self._api_key = api_key
        self.timeout = (connect_timeout, read_timeout)
        self.session = session or _session()

    def __repr__(self):
        return f"<KomboClient timeout={self.timeout}>"  # never the key

    def _headers(self, integration_id):
        return {
            "Authorization": f"Bearer {self._api_key}",
            "X-Integration-Id": integration_id,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    def _send(self, method, url, integration_id, data=None, *, params=None, timeout=None):
        """One request. `timeout` (connect, read) overrides the client's for this call (the
        confirmation page reads with short ones)."""
        started = time.monotonic()
        headers = self._headers(integration_id)
        timeout = timeout or self.timeout
        try:
            response = self.session.request(
                method, url, data=data, params=params, headers=headers, timeout=timeout,
                allow_redirects=False,  # a redirected PUT loses its method or its body
            )
        except _BAD_URL_ERRORS as exc:
            # The URL could not be used: sending again cannot help. The URL is left out of the
            # reason (it comes from the settings and could carry credentials).
            raise KomboError(
                ErrorKind.PERMANENT,
                f"The request could not be built: the Kombo URL is not usable ({type(exc).__name__}); "
                "check KOMBO_API_URL and the integration's region.",
                elapsed=time.monotonic() - started,
            ) from None
        except (requests.exceptions.InvalidHeader, UnicodeError) as exc:
            # Raised while building or encoding the headers. The exception's text quotes the
            # header's value, Authorization included, so only its type is kept.
            raise KomboError(
                ErrorKind.PERMANENT,
                f"The request could not be built ({type(exc).__name__}): {_header_problem(headers)}",
                elapsed=time.monotonic() - started,
            ) from None
        except requests.exceptions.ConnectTimeout:
            raise KomboError(
                ErrorKind.TRANSIENT,
                f"Could not connect to Kombo within {timeout[0]:g} s.",
                elapsed=time.monotonic() - started,
            ) from None
        except requests.exceptions.ReadTimeout:
            raise KomboError(
                ErrorKind.TRANSIENT,
                f"Kombo did not answer within {timeout[1]:g} s (read timeout).",
                elapsed=time.monotonic() - started,
            ) from None
        except requests.exceptions.ConnectionError as exc:
            raise KomboError(
                ErrorKind.TRANSIENT,
                f"Connection to Kombo failed: {type(exc).__name__}: {_connection_error_text(exc)}",
                elapsed=time.monotonic() - started,
            ) from None
        except requests.exceptions.RequestException as exc:
            # Failed while talking to Kombo (a broken or undecodable answer): worth another try.
            raise KomboError(
                ErrorKind.TRANSIENT,
                f"Request to Kombo failed: {type(exc).__name__}.",
                elapsed=time.monotonic() - started,
            ) from None
        except ValueError as exc:
            # Raised while encoding the request: the message could quote a header, Authorization
            # included, so only the type is kept. A person must fix the settings.
            raise KomboError(
                ErrorKind.PERMANENT,
                f"The request could not be encoded ({type(exc).__name__}): {_header_problem(headers)}",
                elapsed=time.monotonic() - started,
            ) from None
        return response, time.monotonic() - started

    def set_packages(self, *, base_url, integration_id, body: bytes) -> KomboSuccess:
        """PUT the whole package list of one integration. Raises KomboError unless it succeeded."""
        response, elapsed = self._send(
            "PUT", f"{base_url}/assessment/packages", integration_id, data=body
        )
        payload = _decode(response, elapsed)
        warnings = payload.get("warnings") or []
        if not isinstance(warnings, list):
            warnings = [warnings]
        return KomboSuccess(
            http_status=response.status_code,
            warnings=[_warning_text(w) for w in warnings],
            body_text=response.text,
            limit_headers=_limit_headers(response),
            elapsed=elapsed,
        )

    def get_packages(self, *, base_url, integration_id, timeout=None) -> list:
        """GET the packages Kombo has now (for a drift check). `type`/`updated_at` may be null."""
        response, elapsed = self._send("GET", f"{base_url}/assessment/packages", integration_id,
                                       timeout=timeout)
        payload = _decode(response, elapsed)
        data = payload.get("data")
        packages = data.get("packages") if isinstance(data, dict) else None
        if not isinstance(packages, list) or not all(isinstance(p, dict) for p in packages):
            raise KomboError(
                ErrorKind.TRANSIENT, "Kombo's answer has no package list.",
                http_status=response.status_code, body_text=response.text, elapsed=elapsed,
            )
        return packages

    def list_orders(self, *, base_url, integration_id, statuses=("OPEN",), page_size=ORDERS_PAGE_MAX,
                    cursor=None, timeout=None) -> "OrdersPage":
        """One page of `GET /assessment/orders` (NOTES.md "Around the call"): the orders with one
        of `statuses`, and the cursor of the next page (None on the last)."""
        params = {"statuses": ",".join(statuses), "page_size": str(min(int(page_size), ORDERS_PAGE_MAX))}
        if cursor:
            params["cursor"] = cursor
        response, elapsed = self._send("GET", f"{base_url}/assessment/orders", integration_id,
                                       params=params, timeout=timeout)
        payload = _decode(response, elapsed)
        data = payload.get("data")
        results = data.get("results") if isinstance(data, dict) else None
        following = data.get("next") if isinstance(data, dict) else None
        if (not isinstance(results, list) or not all(isinstance(o, dict) for o in results)
                or not (following is None or isinstance(following, str))):
            raise KomboError(
                ErrorKind.TRANSIENT, "Kombo's answer has no list of orders.",
                http_status=response.status_code, body_text=response.text, elapsed=elapsed,
            )
        return OrdersPage(results=results, next=following or None, elapsed=elapsed,
                          limit_headers=_limit_headers(response))


# Errors in building the request from the URL. They subclass RequestException (and ValueError),
# so they are caught before the generic, transient RequestException branch.
_BAD_URL_ERRORS = (
    requests.exceptions.InvalidURL,      # InvalidProxyURL included
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.URLRequired,
)

# Which setting each header comes from, for a reason that never quotes the value.
_HEADER_SOURCES = {"Authorization": "KOMBO_API_KEY", "X-Integration-Id": "the integration id"}


def _header_problem(headers):
    """Which header could not be sent and why, in plain words, without ever quoting a value."""
    for name, value in headers.items():
        source = _HEADER_SOURCES.get(name, f"the {name} header")
        if not isinstance(value, str):
            return f"{source} is not text."
        try:
            value.encode("latin-1")
        except UnicodeError:
            return (f"{source} contains a character that cannot be sent in an HTTP header; "
                    "check it for pasted non-ASCII characters.")
        try:
            requests.utils.check_header_validity((name, value))
        except requests.exceptions.InvalidHeader:
            return (f"{source} contains a line break, a leading space or another character not "
                    "allowed in an HTTP header; check it for stray whitespace.")
    return "check that KOMBO_API_KEY and the integration id contain only ASCII characters."


def _connection_error_text(exc):
    # requests nests urllib3's reason; the innermost text is the useful one ("Connection refused").
    text = str(exc)
    match = re.search(r"(Connection refused|Connection reset by peer|Connection aborted|"
                      r"Remote end closed connection without response|Name or service not known)", text)
    return match.group(1) if match else text[:200]


def _warning_text(warning):
    if isinstance(warning, dict):
        return str(warning.get("message", ""))
    return str(warning)


def _text_or_none(value):
    """A JSON value as text: strings as they are, None (or absent) as None, anything else in JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _decode(response, elapsed):
    """The JSON payload of a successful answer, or a classified KomboError."""
    status = response.status_code
    headers = _limit_headers(response)
    text = response.text

    if 300 <= status < 400:
        location = (response.headers.get("location") or "").strip()
        if len(location) > LOCATION_LIMIT:
            location = location[:LOCATION_LIMIT] + "…"
        where = f"a redirect to {location}" if location else "a redirect without a Location header"
        return _raise(KomboError(
            ErrorKind.PERMANENT,
            f"Kombo answered HTTP {status} with {where}: redirects are never followed (the PUT "
            "would lose its body); check KOMBO_API_URL and the integration's region.",
            http_status=status, body_text=text, limit_headers=headers, elapsed=elapsed,
        ))

    try:
        payload = response.json() if text.strip() else None
    except ValueError:
        payload = None
    parsed = isinstance(payload, dict)

    if 200 <= status < 300 and parsed and payload.get("status") == "success":
        return payload

    error = payload.get("error") if parsed and isinstance(payload.get("error"), dict) else None
    if error is not None:
        raw_code = error.get("code")
        # A code that is not a string counts as unknown: classified by the HTTP status.
        code = (raw_code.strip() or None) if isinstance(raw_code, str) else None
        kind = classify(code, status)
        message = _text_or_none(error.get("message")) or ""
        log_url = error.get("log_url")
        reason = f"Kombo answered HTTP {status}"
        if code:
            reason += f" {code}"
        elif raw_code is None or isinstance(raw_code, str):
            reason += " (no error code)"
        else:
            reason += f" (unreadable error code {_text_or_none(raw_code)[:100]})"
        reason += f": {message}" if message else "."
        return _raise(KomboError(
            kind, reason, http_status=status, code=code, title=_text_or_none(error.get("title")),
            message=message, log_url=log_url if isinstance(log_url, str) else None, body_text=text,
            limit_headers=headers, retry_after=_retry_after(response), elapsed=elapsed,
        ))

    if 200 <= status < 300:
        # Kombo may well have applied the list, but we cannot tell: a PUT of the full set is
        # idempotent, so sending it again is the safe way to find out.
        what = "an empty body" if not text.strip() else "a body that is not Kombo's JSON"
        return _raise(KomboError(
            ErrorKind.TRANSIENT, f"Kombo answered HTTP {status} with {what}.",
            http_status=status, body_text=text, limit_headers=headers, elapsed=elapsed,
        ))

    kind = classify(None, status)
    if not text.strip():
        reason = f"Kombo answered HTTP {status} with an empty body."
    elif not parsed:
        reason = f"Kombo answered HTTP {status} with a non-JSON body: {_text_excerpt(text)}"
    else:
        reason = f"Kombo answered HTTP {status} without an error object."
    return _raise(KomboError(
        kind, reason, http_status=status, body_text=text, limit_headers=headers,
        retry_after=_retry_after(response), elapsed=elapsed,
    ))


def _raise(error):
    raise error
