"""The Kombo client over real HTTP against the local sandbox: every response shape, classified."""
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

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
