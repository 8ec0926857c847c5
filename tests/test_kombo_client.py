"""The Kombo client over real HTTP against the local sandbox: every response shape, classified."""
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from packages_app import kombo
from packages_app.kombo import ErrorKind, KomboClient, KomboError, classify, parse_retry_after
from packages_app.sandbox import Fault

KEY = "test-kombo-api-key-0123456789"
BODY = b'{"packages":[{"id":"1001","type":"SKILLS_TEST","name":"TypeScript","description":"TS"}]}'
INTEGRATION = "recruitee:HWUTwvyx2wLoSUHphiWVrp28"


@pytest.fixture
def client():
    return KomboClient(api_key=KEY, connect_timeout=1, read_timeout=1)


def put(client, sandbox, body=BODY, integration=INTEGRATION):
    return client.set_packages(base_url=sandbox.url, integration_id=integration, body=body)


def put_error(client, sandbox, fault=None, **kwargs) -> KomboError:
    if fault:
        sandbox.enqueue_fault(fault)
    with pytest.raises(KomboError) as info:
        put(client, sandbox, **kwargs)
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    return info.value


def test_success_sends_the_contract_headers_and_exact_bytes(client, sandbox):
    result = put(client, sandbox)
    assert result.http_status == 200 and result.warnings == []
    (request,) = sandbox.requests("PUT")
    assert request.body == BODY
    assert request.path == "/v1/assessment/packages"
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["x-integration-id"] == INTEGRATION
    assert headers["content-type"] == "application/json"
    assert "ratelimit-limit" in result.limit_headers and "concurrency-limit" in result.limit_headers
    assert sandbox.packages(INTEGRATION)[0]["id"] == "1001"


def test_success_with_warnings(client, sandbox):
    sandbox.extra_warnings = ["Package names longer than 50 characters are cut in this ATS."]
    assert put(client, sandbox).warnings == ["Package names longer than 50 characters are cut in this ATS."]


def test_full_error_is_permanent_with_every_field(client, sandbox):
    error = put_error(client, sandbox, body=b'{"packages":[{"id":"1","type":"NOPE","name":"n","description":"d"}]}')
    assert error.kind is ErrorKind.PERMANENT and error.http_status == 400
    assert error.code == "PLATFORM.INPUT_INVALID" and error.title
    assert "packages[0].type must be one of" in error.message
    assert error.log_url.startswith("http://127.0.0.1")
    assert error.reason.startswith("Kombo answered HTTP 400 PLATFORM.INPUT_INVALID: packages[0].type")


def minimal(message="The message is always in the response."):
    return {"status": "error", "error": {"code": None, "title": None, "message": message, "log_url": None}}


@pytest.mark.parametrize("status,kind", [(400, ErrorKind.PERMANENT), (500, ErrorKind.PERMANENT),
                                         (429, ErrorKind.TRANSIENT), (503, ErrorKind.TRANSIENT)])
def test_minimal_error_falls_back_to_the_http_status(client, sandbox, status, kind):
    error = put_error(client, sandbox, Fault(status=status, body=minimal()))
    assert error.kind is kind and error.code is None and error.title is None and error.log_url is None
    assert error.message == "The message is always in the response."
    assert "(no error code)" in error.reason


@pytest.mark.parametrize("status,kind", [(409, ErrorKind.PERMANENT), (502, ErrorKind.TRANSIENT)])
def test_unknown_code_is_treated_like_null(client, sandbox, status, kind):
    body = {"status": "error", "error": {"code": "PLATFORM.SOMETHING_NEW", "title": "t", "message": "m", "log_url": None}}
    error = put_error(client, sandbox, Fault(status=status, body=body))
    assert error.kind is kind and error.code == "PLATFORM.SOMETHING_NEW"


def test_html_502_from_a_load_balancer_is_transient_with_a_readable_reason(client, sandbox):
    error = put_error(client, sandbox, Fault(status=502, body="<html><body><h1>502 Bad Gateway</h1></body></html>"))
    assert error.kind is ErrorKind.TRANSIENT and error.http_status == 502
    assert error.reason == "Kombo answered HTTP 502 with a non-JSON body: 502 Bad Gateway"


@pytest.mark.parametrize("status,kind", [(500, ErrorKind.PERMANENT), (504, ErrorKind.TRANSIENT)])
def test_empty_body(client, sandbox, status, kind):
    error = put_error(client, sandbox, Fault(status=status, body=None))
    assert error.kind is kind and error.reason == f"Kombo answered HTTP {status} with an empty body."


def test_200_with_malformed_json_is_transient(client, sandbox):
    error = put_error(client, sandbox, Fault(status=200, body="{not json", content_type="application/json"))
    assert error.kind is ErrorKind.TRANSIENT and error.http_status == 200
    assert "not Kombo's JSON" in error.reason


def test_connection_refused(client):
    with pytest.raises(KomboError) as info:
        client.set_packages(base_url="http://127.0.0.1:9/v1", integration_id=INTEGRATION, body=BODY)
    assert info.value.kind is ErrorKind.TRANSIENT and info.value.http_status is None
    assert "Connection refused" in info.value.reason


def test_connection_reset(client, sandbox):
    error = put_error(client, sandbox, Fault(reset=True))
    assert error.kind is ErrorKind.TRANSIENT and error.reason.startswith("Connection to Kombo failed")


def test_read_timeout(client, sandbox):
    error = put_error(client, sandbox, Fault(status=200, delay=1.6))
    assert error.kind is ErrorKind.TRANSIENT
    assert error.reason == "Kombo did not answer within 1 s (read timeout)."


def test_rate_limit_with_retry_after_seconds_and_headers(client, sandbox):
    body = {"status": "error", "error": {"code": "PLATFORM.RATE_LIMIT_EXCEEDED", "title": "t", "message": "slow down", "log_url": None}}
    error = put_error(client, sandbox, Fault(status=429, body=body, headers={
        "Retry-After": "7", "ratelimit-limit": "300", "ratelimit-remaining": "0", "ratelimit-reset": "57"}))
    assert error.kind is ErrorKind.TRANSIENT and error.retry_after == 7
    assert error.limit_headers["ratelimit-remaining"] == "0" and error.limit_headers["ratelimit-reset"] == "57"


def test_rate_limit_without_retry_after_uses_ratelimit_reset(client, sandbox):
    body = {"status": "error", "error": {"code": "PLATFORM.RATE_LIMIT_EXCEEDED", "title": None, "message": "m", "log_url": None}}
    error = put_error(client, sandbox, Fault(status=429, body=body, headers={"ratelimit-reset": "12"}))
    assert error.retry_after == 12


def test_retry_after_as_http_date():
    now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_setup_sync_pending_is_its_own_kind(client, sandbox):
    error = put_error(client, sandbox, integration="syncpending:abc")
    assert error.kind is ErrorKind.SYNC_PENDING and error.http_status == 409


def test_integration_not_found_and_auth_are_permanent(client, sandbox):
    assert put_error(client, sandbox, integration="notfound:abc").code == "PLATFORM.INTEGRATION_NOT_FOUND"
    wrong_key = KomboClient(api_key="wrong-key", connect_timeout=1, read_timeout=1)
    error = put_error(wrong_key, sandbox)
    assert error.kind is ErrorKind.PERMANENT and error.http_status == 401
    assert error.code == "PLATFORM.AUTHENTICATION_INVALID"


@pytest.mark.parametrize("code,kind", [
    ("PLATFORM.RATE_LIMIT_EXCEEDED", ErrorKind.TRANSIENT),
    ("PLATFORM.CONCURRENCY_LIMIT_EXCEEDED", ErrorKind.TRANSIENT),
    ("REMOTE.RATE_LIMIT_EXCEEDED", ErrorKind.TRANSIENT),
    ("REMOTE.SERVICE_UNAVAILABLE", ErrorKind.TRANSIENT),
    ("PLATFORM.INPUT_INVALID", ErrorKind.PERMANENT),
    ("REMOTE.INPUT_INVALID", ErrorKind.PERMANENT),
    ("PLATFORM.AUTHENTICATION_INVALID", ErrorKind.PERMANENT),
    ("PLATFORM.IP_NOT_WHITELISTED", ErrorKind.PERMANENT),
    ("PLATFORM.INTEGRATION_NOT_FOUND", ErrorKind.PERMANENT),
    ("INTEGRATION.PERMISSION_MISSING", ErrorKind.PERMANENT),
    ("INTEGRATION.INACTIVE", ErrorKind.PERMANENT),
    ("INTEGRATION.SETUP_SYNC_PENDING", ErrorKind.SYNC_PENDING),
    ("PLATFORM.UNKNOWN_ERROR", ErrorKind.NO_AUTO_RETRY),
    ("REMOTE.UNKNOWN_HTTP_ERROR", ErrorKind.NO_AUTO_RETRY),
    ("PLATFORM.TASK_TIMED_OUT", ErrorKind.NO_AUTO_RETRY),
])
def test_classification_follows_the_notes_table_whatever_the_status(code, kind):
    # Kombo moved codes between statuses before: the code decides, not the status.
    assert classify(code, 503) is kind and classify(code, 400) is kind


def test_get_packages_tolerates_null_type_and_updated_at(client, sandbox):
    put(client, sandbox)
    packages = client.get_packages(base_url=sandbox.url, integration_id=INTEGRATION)
    assert [p["id"] for p in packages] == ["1001"]
    body = {"status": "success", "data": {"packages": [{"id": "legacy-7", "name": "Old", "description": "d", "updated_at": None, "type": None}]}}
    sandbox.enqueue_fault(Fault(status=200, body=body))
    assert client.get_packages(base_url=sandbox.url, integration_id=INTEGRATION)[0]["type"] is None


def test_client_repr_never_shows_the_key(client):
    assert KEY not in repr(client)


# --- redirects: never followed ---------------------------------------------------------------

@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_is_never_followed_and_is_permanent(client, sandbox, status):
    # Pointing at the sandbox itself: a followed redirect would reach it a second time (a 302 as a
    # GET whose success answer looked like a publish, a 301 as a PUT without its body).
    location = f"{sandbox.url}/assessment/packages"
    error = put_error(client, sandbox, Fault(status=status, body=None, headers={"Location": location}))
    assert error.kind is ErrorKind.PERMANENT and error.http_status == status and error.code is None
    assert error.reason == (
        f"Kombo answered HTTP {status} with a redirect to {location}: redirects are never followed "
        "(the PUT would lose its body); check KOMBO_API_URL and the integration's region.")
    assert len(sandbox.requests()) == 1
    assert sandbox.packages(INTEGRATION) == []


def test_redirect_with_a_json_body_and_a_long_location_is_cut(client, sandbox):
    location = "http://127.0.0.1:9/v1/assessment/packages?" + "x" * 5000  # loopback: never reaches Kombo
    error = put_error(client, sandbox, Fault(status=302, headers={"Location": location},
                                             body={"status": "success", "data": {}, "warnings": []}))
    assert error.kind is ErrorKind.PERMANENT
    assert f"redirect to {location[:300]}…: redirects are never followed" in error.reason
    assert len(error.reason) < 600 and len(sandbox.requests()) == 1


def test_redirect_without_location(client, sandbox):
    error = put_error(client, sandbox, Fault(status=303, body=None))
    assert error.kind is ErrorKind.PERMANENT
    assert error.reason.startswith("Kombo answered HTTP 303 with a redirect without a Location header")


def test_get_packages_does_not_follow_redirects_either(client, sandbox):
    location = f"{sandbox.url}/assessment/packages"
    sandbox.enqueue_fault(Fault(status=307, body=None, headers={"Location": location}))
    with pytest.raises(KomboError) as info:
        client.get_packages(base_url=sandbox.url, integration_id=INTEGRATION)
    assert info.value.kind is ErrorKind.PERMANENT and location in info.value.reason
    assert len(sandbox.requests("GET")) == 1


# --- a request that cannot be built: permanent, nothing sent ---------------------------------

@pytest.mark.parametrize("key,integration,source", [
    (KEY, "recruitee:abc\nX-Injected: 1", "the integration id"),
    (KEY, "recruitee:abc\r", "the integration id"),
    (KEY, " recruitee:abc", "the integration id"),
    (KEY, "recruitee:ab\u0100c", "the integration id"),
    (KEY + "\n", INTEGRATION, "KOMBO_API_KEY"),
    (KEY + "\u2028", INTEGRATION, "KOMBO_API_KEY"),
    ("\u201c" + KEY + "\u201d", INTEGRATION, "KOMBO_API_KEY"),
])
def test_a_header_that_cannot_be_sent_is_permanent_and_nothing_is_sent(sandbox, key, integration, source):
    client = KomboClient(api_key=key, connect_timeout=1, read_timeout=1)
    error = put_error(client, sandbox, integration=integration)
    assert error.kind is ErrorKind.PERMANENT and error.http_status is None
    assert error.reason.startswith("The request could not be built") and source in error.reason
    assert "Bearer" not in error.reason and key not in error.reason
    assert sandbox.requests() == []


@pytest.mark.parametrize("base_url", [
    "127.0.0.1/v1",              # MissingSchema
    "ftp://127.0.0.1/v1",        # InvalidSchema
    "http:///v1",                # InvalidURL
    "http://127.0.0.1:9:9/v1",   # InvalidURL
])
def test_a_url_that_cannot_be_used_is_permanent(client, base_url):
    with pytest.raises(KomboError) as info:
        client.set_packages(base_url=base_url, integration_id=INTEGRATION, body=BODY)
    assert info.value.kind is ErrorKind.PERMANENT and info.value.http_status is None
    assert "KOMBO_API_URL" in info.value.reason and KEY not in info.value.reason


# --- classification: known codes by code, the rest by HTTP status ----------------------------

@pytest.mark.parametrize("code", [
    "INTEGRATION.AUTHENTICATION_INVALID", "INTEGRATION.QA_FAILED", "INTEGRATION.SETUP_INCOMPLETE",
    "INTEGRATION.MODEL_NOT_AVAILABLE", "INTEGRATION.MODEL_FIELD_MISSING",
    "INTEGRATION.ACTION_NOT_AVAILABLE", "INTEGRATION.ACTION_DISABLED",
])
def test_documented_integration_codes_are_permanent_whatever_the_status(code):
    assert classify(code, 503) is ErrorKind.PERMANENT and classify(code, 400) is ErrorKind.PERMANENT
    assert classify(code, None) is ErrorKind.PERMANENT


@pytest.mark.parametrize("code", [None, "INTEGRATION.SOMETHING_NEW", "PLATFORM.SOMETHING_NEW", 123, ["x"], {"a": 1}, True])
@pytest.mark.parametrize("status,kind", [
    (429, ErrorKind.TRANSIENT), (502, ErrorKind.TRANSIENT), (503, ErrorKind.TRANSIENT),
    (504, ErrorKind.TRANSIENT), (None, ErrorKind.TRANSIENT),
    (400, ErrorKind.PERMANENT), (409, ErrorKind.PERMANENT), (500, ErrorKind.PERMANENT),
])
def test_unknown_null_or_non_string_codes_fall_back_to_the_http_status(code, status, kind):
    assert classify(code, status) is kind


@pytest.mark.parametrize("status,kind", [(503, ErrorKind.TRANSIENT), (409, ErrorKind.PERMANENT)])
def test_unknown_integration_code_over_http_falls_back_to_the_status(client, sandbox, status, kind):
    body = {"status": "error", "error": {"code": "INTEGRATION.SOMETHING_NEW", "title": "t", "message": "m", "log_url": None}}
    error = put_error(client, sandbox, Fault(status=status, body=body))
    assert error.kind is kind and error.code == "INTEGRATION.SOMETHING_NEW"


@pytest.mark.parametrize("code", [123, 1.5, ["PLATFORM.INPUT_INVALID"], {"id": "PLATFORM.INPUT_INVALID"}, True, False])
@pytest.mark.parametrize("status,kind", [(503, ErrorKind.TRANSIENT), (400, ErrorKind.PERMANENT)])
def test_non_string_code_counts_as_unknown_and_never_crashes(client, sandbox, code, status, kind):
    error = put_error(client, sandbox, Fault(status=status, body={"status": "error", "error": {"code": code, "message": "x"}}))
    assert error.kind is kind and error.code is None and error.http_status == status
    assert error.message == "x" and error.title is None and error.log_url is None
    assert error.reason.startswith(f"Kombo answered HTTP {status} (unreadable error code ")
    assert error.reason.endswith("): x")


def test_non_string_title_message_and_log_url_become_text_or_none(client, sandbox):
    body = {"status": "error", "error": {"code": "PLATFORM.INPUT_INVALID", "title": 42,
                                         "message": {"field": "packages[0].id"}, "log_url": ["https://x"]}}
    error = put_error(client, sandbox, Fault(status=400, body=body))
    assert error.kind is ErrorKind.PERMANENT and error.code == "PLATFORM.INPUT_INVALID"
    assert error.title == "42" and error.message == '{"field": "packages[0].id"}' and error.log_url is None
    assert error.reason == 'Kombo answered HTTP 400 PLATFORM.INPUT_INVALID: {"field": "packages[0].id"}'


def test_success_with_warnings_that_are_not_a_list(client, sandbox):
    sandbox.enqueue_fault(Fault(status=200, body={"status": "success", "data": {}, "warnings": "careful"}))
    assert put(client, sandbox).warnings == ["careful"]


@pytest.mark.parametrize("url,safe", [
    ("https://app.kombo.dev/logs?interactionId=1", True),
    ("http://127.0.0.1:8765/v1", True),
    ("http://localhost/v1", True),
    ("http://[::1]:8765/v1", True),
    ("http://app.kombo.dev/logs", False),          # plain http to a real host
    ("javascript:alert(document.cookie)", False),
    ("JaVaScRiPt:alert(1)", False),
    ("data:text/html,<script>1</script>", False),
    ("//evil.example/x", False),
    ("https://", False),
    ("", False),
    (None, False),
])
def test_one_rule_for_urls_that_may_be_used_or_shown(url, safe):
    assert kombo.is_safe_url(url) is safe


def test_every_link_from_kombos_answers_goes_through_the_filter():
    """Templates render Kombo's log links only through `kombo_link`: an upstream javascript: URL
    (an error answer of the compare page, a stored publication) is never clickable."""
    from django.template.loader import render_to_string
    from django.test import RequestFactory

    from packages_app.templatetags.kombo_links import kombo_link

    assert kombo_link("javascript:alert(1)") == "" and kombo_link("https://x.kombo.dev/l") == "https://x.kombo.dev/l"
    html = render_to_string("admin/packages_app/publication/_live.html", {
        "publication": type("P", (), {"status": "failed", "is_final": True, "error_log_url": "javascript:alert(1)",
                                      "attempts": 1})(),
        "badge": "Failed"}, request=RequestFactory().get("/"))
    assert "javascript:" not in html
    import pathlib
    root = pathlib.Path(__file__).resolve().parent.parent / "templates"
    for template in root.rglob("*.html"):
        for line in template.read_text().splitlines():
            if "href=" in line and "log_url" in line:
                assert "|kombo_link" in line, f"{template.name}: a Kombo link without the filter: {line.strip()}"


def test_a_netrc_entry_for_kombos_host_never_replaces_the_bearer_token(sandbox, tmp_path, monkeypatch):
    """requests would take Basic auth from ~/.netrc for the host when it reads the environment;
    the client reads it only when a proxy is configured, and sends its bearer token either way."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password something\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    client = KomboClient(api_key=KEY, connect_timeout=1, read_timeout=1)
    assert put(client, sandbox).http_status == 200
    (request,) = sandbox.requests("PUT")
    assert {k.lower(): v for k, v in request.headers.items()}["authorization"] == f"Bearer {KEY}"
