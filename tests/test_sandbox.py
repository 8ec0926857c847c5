"""The local Kombo sandbox over real HTTP: contract, errors, faults, limits, control endpoints.

No Django and no database here: the sandbox is standard library only.
"""
import json
import re
import threading
import time

import pytest
import requests

from packages_app.sandbox import Fault, KomboSandbox

KEY = "sandbox-test-key-0123456789"
IID = "recruitee:HWUTwvyx2wLoSUHphiWVrp28"
TYPES = "BEHAVIORAL, VIDEO_INTERVIEW, SKILLS_TEST, BACKGROUND_CHECK, REFERENCE_CHECK"


def pkg(pid, name=None, type="SKILLS_TEST", description=None):
    return {"id": pid, "type": type, "name": name or f"Package {pid}", "description": description or f"About {pid}"}


@pytest.fixture
def sandbox():
    with KomboSandbox(api_key=KEY) as server:
        yield server


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def headers(integration=IID, key=KEY, **extra):
    h = {"Content-Type": "application/json"}
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    if integration is not None:
        h["X-Integration-Id"] = integration
    h.update(extra)
    return h


def put(http, sandbox, packages=None, *, body=None, timeout=5, **kw):
    data = body if body is not None else json.dumps({"packages": packages or []})
    return http.put(f"{sandbox.url}/assessment/packages", data=data, headers=headers(**kw), timeout=timeout)


def get(http, sandbox, **kw):
    return http.get(f"{sandbox.url}/assessment/packages", headers=headers(**kw), timeout=5)


def assert_error(response, status, code, message=None):
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "error" and set(body["error"]) == {"code", "title", "message", "log_url"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    if message is not None:
        assert body["error"]["message"] == message
    return body["error"]


# --- the contract ----------------------------------------------------------------------------------


def test_put_success_shape_headers_and_state(http, sandbox):
    r = put(http, sandbox, [pkg("1001"), pkg("1002", type="VIDEO_INTERVIEW")])
    assert r.status_code == 200
    assert r.json() == {"status": "success", "data": {}, "warnings": []}
    assert int(r.headers["Content-Length"]) == len(r.content)
    for name in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "Concurrency-Limit", "Concurrency-Remaining"):
        assert r.headers[name].isdigit(), name
    assert r.headers["ratelimit-limit"] == "300" and r.headers["Concurrency-Limit"] == "30"
    assert sandbox.packages(IID) == [pkg("1001"), pkg("1002", type="VIDEO_INTERVIEW")]
    assert sandbox.deleted_ids(IID) == []
    (request,) = sandbox.requests("PUT")
    assert request.path == "/v1/assessment/packages" and request.integration_id == IID
    assert request.status == 200 and request.started_at <= request.ended_at
    assert json.loads(request.body) == {"packages": [pkg("1001"), pkg("1002", type="VIDEO_INTERVIEW")]}


def test_put_replaces_marks_deleted_and_revives(http, sandbox):
    put(http, sandbox, [pkg("a"), pkg("b"), pkg("c")])
    put(http, sandbox, [pkg("c"), pkg("a")])
    assert [p["id"] for p in sandbox.packages(IID)] == ["c", "a"]
    assert sandbox.deleted_ids(IID) == ["b"]
    put(http, sandbox, [pkg("b")])
    assert [p["id"] for p in sandbox.packages(IID)] == ["b"]
    assert sandbox.deleted_ids(IID) == ["c", "a"]
    assert put(http, sandbox, []).status_code == 200  # an empty list deletes everything
    assert sandbox.packages(IID) == [] and sorted(sandbox.deleted_ids(IID)) == ["a", "b", "c"]
    assert sandbox.packages("recruitee:Other") == [] and sandbox.deleted_ids("recruitee:Other") == []


def test_get_reads_back_live_packages_and_updated_at_changes_only_with_content(http, sandbox):
    assert get(http, sandbox).json() == {"status": "success", "data": {"packages": []}}
    put(http, sandbox, [pkg("1"), pkg("2")])
    first = {p["id"]: p for p in get(http, sandbox).json()["data"]["packages"]}
    assert list(first) == ["1", "2"]
    assert set(first["1"]) == {"id", "name", "description", "updated_at", "type"}
    assert first["1"]["type"] == "SKILLS_TEST" and first["1"]["name"] == "Package 1"
    stamp = first["1"]["updated_at"]
    assert len(stamp) == 24 and stamp.endswith("Z") and stamp[19] == "."  # 2026-01-02T03:04:05.678Z
    time.sleep(0.005)
    put(http, sandbox, [pkg("1"), pkg("2", name="Renamed")])
    second = {p["id"]: p for p in get(http, sandbox).json()["data"]["packages"]}
    assert second["1"]["updated_at"] == first["1"]["updated_at"]
    assert second["2"]["updated_at"] > first["2"]["updated_at"] and second["2"]["name"] == "Renamed"
    assert [r.method for r in sandbox.requests()] == ["GET", "PUT", "GET", "PUT", "GET"]


def test_warnings_for_long_names_extra_and_workday(http, sandbox):
    long_name = "x" * 51
    r = put(http, sandbox, [pkg("1001", name=long_name), pkg("1002", name="y" * 50)])
    assert r.json()["warnings"] == [
        {"message": 'Package "1001": names longer than 50 characters are cut in this ATS.'}]
    sandbox.extra_warnings = ["Something to log."]
    assert [w["message"] for w in put(http, sandbox, [pkg("1")]).json()["warnings"]] == ["Something to log."]
    warnings = [w["message"] for w in put(http, sandbox, [pkg("1")], integration="workday:abc").json()["warnings"]]
    assert warnings[0] == "Something to log." and "Workday" in warnings[1] and "by hand" in warnings[1]
    assert sandbox.packages("workday:abc") == [pkg("1")]


def test_long_name_warnings_can_be_switched_off(http):
    with KomboSandbox(warn_long_names=False) as sandbox:
        assert put(http, sandbox, [pkg("1", name="z" * 80)], key="any-key").json()["warnings"] == []


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("body,message", [
    ({"packages": [pkg("1"), pkg("2", type="NOPE")]}, f"packages[1].type must be one of {TYPES}"),
    ({"packages": [{"type": "SKILLS_TEST", "name": "n", "description": "d"}]}, "packages[0].id is required"),
    ({"packages": [pkg("1", description=None) | {"description": None}]}, "packages[0].description must be a string"),
    ({"packages": [pkg("1") | {"id": 1001}]}, "packages[0].id must be a string"),
    ({"packages": [pkg("x"), pkg("y"), pkg("x")]}, 'packages[2].id "x" is a duplicate of packages[0].id'),
    ({"packages": ["1001"]}, "packages[0] must be an object"),
    ({"packages": {"id": "1"}}, "packages must be an array"),
    ({}, "packages is required"),
    ([], "body must be a JSON object"),
    ("{not json", "body is not valid JSON"),
    ("", "body is not valid JSON"),
])
def test_invalid_bodies_are_400_input_invalid_naming_the_path(http, sandbox, body, message):
    data = body if isinstance(body, str) else json.dumps(body)
    r = put(http, sandbox, body=data) if data else http.put(
        f"{sandbox.url}/assessment/packages", data=b"", headers=headers(), timeout=5)
    error = assert_error(r, 400, "PLATFORM.INPUT_INVALID", message)
    assert error["title"] == "The input is invalid."
    assert error["log_url"].startswith(f"http://127.0.0.1:{sandbox.port}/logs?interactionId=")
    assert sandbox.packages(IID) == []


def test_invalid_put_changes_nothing_and_content_type_is_required(http, sandbox):
    put(http, sandbox, [pkg("1")])
    assert put(http, sandbox, [pkg("2"), pkg("3", type="bad")]).status_code == 400
    r = put(http, sandbox, [pkg("2")], **{"Content-Type": "text/plain"})
    error = assert_error(r, 400, "PLATFORM.INPUT_INVALID")
    assert "Content-Type must be application/json" in error["message"]
    assert put(http, sandbox, [pkg("4")], **{"Content-Type": "application/json; charset=utf-8"}).status_code == 200
    assert [p["id"] for p in sandbox.packages(IID)] == ["4"] and sandbox.deleted_ids(IID) == ["1"]


def test_log_urls_count_requests(http, sandbox):
    urls = [assert_error(put(http, sandbox, body="nope"), 400, "PLATFORM.INPUT_INVALID")["log_url"] for _ in range(2)]
    assert urls == [f"http://127.0.0.1:{sandbox.port}/logs?interactionId={n}" for n in (1, 2)]


# --- auth, header, routes, magic slugs ---------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Bearer ", f"Basic {KEY}", KEY])
def test_bad_or_missing_api_key_is_401(http, sandbox, auth):
    h = headers(key=None)
    if auth is not None:
        h["Authorization"] = auth
    r = http.put(f"{sandbox.url}/assessment/packages", data=json.dumps({"packages": [pkg("1")]}), headers=h, timeout=5)
    assert_error(r, 401, "PLATFORM.AUTHENTICATION_INVALID")
    assert "ratelimit-limit" in r.headers and sandbox.packages(IID) == []


def test_without_configured_key_any_bearer_token_passes(http):
    with KomboSandbox() as sandbox:
        assert put(http, sandbox, [pkg("1")], key="whatever").status_code == 200
        assert_error(put(http, sandbox, [pkg("1")], key=None), 401, "PLATFORM.AUTHENTICATION_INVALID")


@pytest.mark.parametrize("integration", [None, "", "no-colon", "a:b:c", "sp ace:x", "tool:"])
def test_missing_or_malformed_integration_header_is_404(http, sandbox, integration):
    r = put(http, sandbox, [pkg("1")], integration=integration)
    error = assert_error(r, 404, "PLATFORM.INTEGRATION_NOT_FOUND")
    assert "X-Integration-Id" in error["message"]


@pytest.mark.parametrize("slug,status,code", [
    ("notfound", 404, "PLATFORM.INTEGRATION_NOT_FOUND"),
    ("syncpending", 409, "INTEGRATION.SETUP_SYNC_PENDING"),
    ("inactive", 403, "INTEGRATION.INACTIVE"),
])
def test_magic_slugs(http, sandbox, slug, status, code):
    for call in (lambda: put(http, sandbox, [pkg("1")], integration=f"{slug}:abc"),
                 lambda: get(http, sandbox, integration=f"{slug}:abc")):
        error = assert_error(call(), status, code)
        assert error["title"] and error["log_url"].startswith(f"http://127.0.0.1:{sandbox.port}/logs?interactionId=")
    assert sandbox.packages(f"{slug}:abc") == []


def test_unknown_path_is_404_and_other_methods_are_405(http, sandbox):
    r = http.get(f"{sandbox.url}/assessment/candidates", headers=headers(), timeout=5)
    assert_error(r, 404, None)
    r = http.post(f"{sandbox.url}/assessment/packages", data="{}", headers=headers(), timeout=5)
    assert_error(r, 405, None)
    assert r.headers["Allow"] == "GET, PUT"
    # A query string is tolerated.
    assert http.get(f"{sandbox.url}/assessment/packages?x=1", headers=headers(), timeout=5).status_code == 200


# --- faults ----------------------------------------------------------------------------------------


def test_fault_with_status_and_html_body_then_normal_again(http, sandbox):
    html = "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
    sandbox.enqueue_fault(Fault(status=503, body=html))
    r = put(http, sandbox, [pkg("1")])
    assert r.status_code == 503 and r.text == html and r.headers["Content-Type"].startswith("text/html")
    assert "ratelimit-limit" not in r.headers  # a fault answers exactly as scripted
    assert sandbox.packages(IID) == []
    assert put(http, sandbox, [pkg("1")]).status_code == 200  # the fault was consumed
    assert [r.status for r in sandbox.requests("PUT")] == [503, 200]


def test_fault_bodies_dict_malformed_json_empty_and_headers(http, sandbox):
    sandbox.enqueue_fault(Fault(status=429, body={"status": "error", "error": {"code": None, "title": None,
                                                                              "message": "m", "log_url": None}},
                                headers={"Retry-After": "7", "ratelimit-reset": "57"}))
    sandbox.enqueue_fault(Fault(status=200, body="{not json", content_type="application/json"))
    sandbox.enqueue_fault(Fault(status=504))
    r = put(http, sandbox, [pkg("1")])
    assert r.status_code == 429 and r.json()["error"]["message"] == "m"
    assert r.headers["Retry-After"] == "7" and r.headers["ratelimit-reset"] == "57"
    assert r.headers["Content-Type"] == "application/json"
    r = put(http, sandbox, [pkg("1")])
    assert r.status_code == 200 and r.text == "{not json" and r.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        r.json()
    r = put(http, sandbox, [pkg("1")])
    assert r.status_code == 504 and r.content == b"" and "Content-Type" not in r.headers
    assert sandbox.packages(IID) == []


def test_faults_are_fifo_and_can_target_one_integration(http, sandbox):
    sandbox.enqueue_fault(Fault(status=502, integration_id="recruitee:B"))
    sandbox.enqueue_fault(Fault(status=500))
    assert put(http, sandbox, [pkg("1")], integration="recruitee:A").status_code == 500
    assert put(http, sandbox, [pkg("1")], integration="recruitee:A").status_code == 200
    assert put(http, sandbox, [pkg("1")], integration="recruitee:B").status_code == 502
    assert put(http, sandbox, [pkg("1")], integration="recruitee:B").status_code == 200


def test_reset_fault_raises_connection_error(http, sandbox):
    sandbox.enqueue_fault(Fault(reset=True))
    with pytest.raises(requests.ConnectionError):
        put(http, sandbox, [pkg("1")])
    (request,) = sandbox.requests("PUT")
    assert request.status is None and request.ended_at is not None
    assert sandbox.packages(IID) == []
    assert put(http, sandbox, [pkg("1")]).status_code == 200  # the session recovers


def test_delay_fault_provokes_a_read_timeout(http, sandbox):
    sandbox.enqueue_fault(Fault(status=503, delay=0.5))
    with pytest.raises(requests.ReadTimeout):
        put(http, sandbox, [pkg("1")], timeout=0.1)


def test_delay_only_fault_is_a_slow_server_then_normal_handling(http, sandbox):
    sandbox.enqueue_fault(Fault(status=200, delay=0.3))
    started = time.monotonic()
    r = put(http, sandbox, [pkg("1")])
    assert time.monotonic() - started >= 0.3
    assert r.status_code == 200 and r.json()["status"] == "success" and sandbox.packages(IID) == [pkg("1")]
    # The same slow fault with a short client timeout: the client gives up, Kombo still did it.
    sandbox.enqueue_fault(Fault(status=200, delay=0.3))
    with pytest.raises(requests.ReadTimeout):
        put(http, sandbox, [pkg("2")], timeout=0.1)
    deadline = time.monotonic() + 3
    while sandbox.packages(IID) != [pkg("2")] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sandbox.packages(IID) == [pkg("2")]


@pytest.mark.parametrize("fault", [Fault(status=502, body="<html>502</html>", apply=True), Fault(reset=True, apply=True)])
def test_apply_fault_stores_the_put_but_loses_the_answer(http, sandbox, fault):
    put(http, sandbox, [pkg("old")])
    sandbox.enqueue_fault(fault)
    with pytest.raises(requests.ConnectionError) if fault.reset else _no_error():
        r = put(http, sandbox, [pkg("new")])
        assert r.status_code == 502
    assert sandbox.packages(IID) == [pkg("new")] and sandbox.deleted_ids(IID) == ["old"]


class _no_error:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_fault_on_get_readback(http, sandbox):
    body = {"status": "success", "data": {"packages": [
        {"id": "legacy-7", "name": "Old", "description": "d", "updated_at": None, "type": None}]}}
    sandbox.enqueue_fault(Fault(status=200, body=body))
    assert get(http, sandbox).json() == body


# --- limits ------------------------------------------------------------------------------------------


def test_rate_limit_429_with_retry_after_and_headers(http):
    with KomboSandbox(api_key=KEY, rate_limit_per_second=3) as sandbox:
        answers = [put(http, sandbox, [pkg("1")]) for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        assert [r.headers["ratelimit-remaining"] for r in answers[:3]] == ["2", "1", "0"]
        limited = answers[3]
        assert_error(limited, 429, "PLATFORM.RATE_LIMIT_EXCEEDED")
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.headers["ratelimit-limit"] == "3" and limited.headers["ratelimit-remaining"] == "0"
        assert 0 <= int(limited.headers["ratelimit-reset"]) <= 1
        assert "Concurrency-Limit" in limited.headers and "Concurrency-Remaining" in limited.headers
        time.sleep(int(limited.headers["Retry-After"]))
        assert put(http, sandbox, [pkg("1")]).status_code == 200


def test_no_rate_limit_is_enforced_by_default(http, sandbox):
    statuses = {put(http, sandbox, [pkg("1")]).status_code for _ in range(20)}
    assert statuses == {200}


def _concurrent_puts(sandbox, integrations):
    barrier = threading.Barrier(len(integrations))
    results = [None] * len(integrations)

    def one(n, integration):
        with requests.Session() as session:
            barrier.wait()
            results[n] = put(session, sandbox, [pkg(str(n))], integration=integration)

    threads = [threading.Thread(target=one, args=(n, i)) for n, i in enumerate(integrations)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results


def test_max_in_flight_per_integration_and_overall():
    with KomboSandbox(api_key=KEY, latency=0.2) as sandbox:
        results = _concurrent_puts(sandbox, ["recruitee:A"] * 3 + ["recruitee:B"])
        assert {r.status_code for r in results} == {200}
        assert sandbox.max_in_flight("recruitee:A") == 3
        assert sandbox.max_in_flight("recruitee:B") == 1
        assert sandbox.max_in_flight() == 4
        assert sandbox.max_in_flight("recruitee:Never") == 0
        puts = sandbox.requests("PUT", "recruitee:A")
        assert len(puts) == 3 and all(r.ended_at - r.started_at >= 0.2 for r in puts)


def test_sequential_requests_never_overlap(http):
    with KomboSandbox(api_key=KEY, latency=0.02) as sandbox:
        for n in range(5):
            put(http, sandbox, [pkg(str(n))])
        assert sandbox.max_in_flight(IID) == 1
        puts = sandbox.requests("PUT")
        assert all(a.ended_at <= b.started_at for a, b in zip(puts, puts[1:]))


def test_concurrency_limit_429():
    with KomboSandbox(api_key=KEY, latency=0.3, concurrency_limit=2) as sandbox:
        results = _concurrent_puts(sandbox, ["recruitee:A"] * 3)
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200, 200, 429]
        limited = next(r for r in results if r.status_code == 429)
        assert_error(limited, 429, "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED")
        assert limited.headers["Concurrency-Limit"] == "2" and limited.headers["Concurrency-Remaining"] == "0"


# --- control endpoints ---------------------------------------------------------------------------------


def control(sandbox):
    return sandbox.url[: -len("/v1")] + "/_sandbox"


def test_control_endpoints_drive_the_sandbox_over_http(http, sandbox):
    base = control(sandbox)
    r = http.post(f"{base}/faults", json={"status": 502, "body": "<html>bad gateway</html>"}, timeout=5)
    assert r.status_code == 204 and r.content == b""
    http.post(f"{base}/faults", json={"status": 500, "body": {"status": "error", "error": {
        "code": "PLATFORM.UNKNOWN_ERROR", "title": None, "message": "boom", "log_url": None}}}, timeout=5)
    http.post(f"{base}/faults", json={"reset": True, "integration_id": "recruitee:Z"}, timeout=5)
    assert http.post(f"{base}/warnings", json={"messages": ["From the control API."]}, timeout=5).status_code == 204

    assert put(http, sandbox, [pkg("1")]).text == "<html>bad gateway</html>"
    assert put(http, sandbox, [pkg("1")]).json()["error"]["message"] == "boom"
    with pytest.raises(requests.ConnectionError):
        put(http, sandbox, [pkg("1")], integration="recruitee:Z")
    r = put(http, sandbox, [pkg("1"), pkg("2")])
    assert r.json()["warnings"] == [{"message": "From the control API."}]
    put(http, sandbox, [pkg("2")])

    state = http.get(f"{base}/state", timeout=5).json()
    assert state[IID] == {"packages": [pkg("2")], "deleted": ["1"], "max_in_flight": 1}
    assert state["recruitee:Z"]["packages"] == []

    listed = http.get(f"{base}/requests", timeout=5).json()
    assert [(x["method"], x["status"], x["integration_id"]) for x in listed] == [
        ("PUT", 502, IID), ("PUT", 500, IID), ("PUT", None, "recruitee:Z"), ("PUT", 200, IID), ("PUT", 200, IID)]
    assert listed[0]["path"] == "/v1/assessment/packages"
    assert json.loads(listed[-1]["body"]) == {"packages": [pkg("2")]}
    assert listed[0]["started_at"] <= listed[0]["ended_at"]
    assert len(sandbox.requests()) == 5  # control calls are not Kombo requests

    assert http.post(f"{base}/reset", timeout=5).status_code == 204
    assert sandbox.requests() == [] and sandbox.packages(IID) == [] and sandbox.extra_warnings == []
    assert http.get(f"{base}/state", timeout=5).json() == {}


def test_requests_listing_and_repr_hide_the_key(http, sandbox):
    put(http, sandbox, [pkg("1")])
    listed_text = http.get(f"{control(sandbox)}/requests", timeout=5).text
    assert KEY not in listed_text
    (listed,) = json.loads(listed_text)
    assert {k.lower(): v for k, v in listed["headers"].items()}["authorization"] == "Bearer ***"
    (request,) = sandbox.requests()
    assert request.headers["Authorization"] == f"Bearer {KEY}"  # in-process callers see what was sent
    assert KEY not in repr(request) and KEY not in repr(sandbox)


def test_control_endpoint_errors(http, sandbox):
    base = control(sandbox)
    assert http.post(f"{base}/faults", json={"nope": 1}, timeout=5).status_code == 400
    assert http.post(f"{base}/faults", data="{oops", timeout=5).status_code == 400
    assert http.post(f"{base}/warnings", json={"messages": "x"}, timeout=5).status_code == 400
    assert http.get(f"{base}/faults", timeout=5).status_code == 405
    assert http.get(f"{base}/unknown", timeout=5).status_code == 404
    assert sandbox.requests() == []


def test_reset_method_and_keep_alive_reuse(http, sandbox):
    sandbox.enqueue_fault(Fault(status=500))
    sandbox.extra_warnings = ["w"]
    put(http, sandbox, [pkg("1")])
    sandbox.enqueue_fault(Fault(status=500))
    sandbox.reset()
    assert sandbox.requests() == [] and sandbox.packages(IID) == [] and sandbox.max_in_flight() == 0
    assert put(http, sandbox, [pkg("1")]).json()["warnings"] == []  # fault and warnings are gone
    # One keep-alive connection served everything above.
    ports = {r.headers["Host"] for r in sandbox.requests()}
    assert ports == {f"127.0.0.1:{sandbox.port}"}
    assert len(sandbox._connections) == 1


def test_stop_closes_the_port():
    sandbox = KomboSandbox(api_key=KEY).start()
    url = sandbox.url
    sandbox.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/assessment/packages", headers=headers(), timeout=1)


# --- webhooks: the sandbox as Kombo's sender -------------------------------------------------

WEBHOOK_SECRET = "whsec_sandbox_test_0123456789"


class _App:
    """A stand-in for the app's /webhooks/kombo/: records what arrives, answers `status`."""

    def __init__(self, status=200):
        import http.server

        self.received, self.status = [], status
        app = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                app.received.append((self.path, dict(self.headers.items()), body))
                answer = json.dumps({"status": "ok", "message": "Received."}).encode()
                self.send_response(app.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/kombo/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    app = _App()
    yield app
    app.close()


def kombo_signature(body, secret=WEBHOOK_SECRET):
    import base64
    import hashlib
    import hmac

    return base64.urlsafe_b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_the_control_endpoint_sends_a_signed_integration_created_to_the_configured_url(http, receiver):
    with KomboSandbox(api_key=KEY, webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET) as sandbox:
        r = http.post(f"{control(sandbox)}/webhooks/integration-created",
                      json={"organization_name": "Acme", "id": "personio:Abc123"}, timeout=5)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert WEBHOOK_SECRET not in r.text and WEBHOOK_SECRET not in repr(sandbox)
        (path, sent_headers, body), = receiver.received
        assert path == "/webhooks/kombo/" and sent_headers["Content-Type"] == "application/json"
        assert sent_headers["X-Kombo-Signature"] == kombo_signature(body) == answer["signature"]
        event = json.loads(body)
        assert answer == {"url": receiver.url, "event": event, "signature": answer["signature"], "status": 200,
                          "response": {"status": "ok", "message": "Received."}}
        assert set(event) == {"id", "type", "data"} and event["type"] == "integration-created"
        assert re.fullmatch(r"[A-Za-z0-9]{24}", event["id"])
        assert event["data"] == {"id": "personio:Abc123", "tool": "personio", "category": "ASSESSMENT",
                                 "end_user": {"organization_name": "Acme", "creator_email": None, "origin_id": None}}
        # Defaults: a generated integration id and a fresh event id every time.
        http.post(f"{control(sandbox)}/webhooks/integration-created", timeout=5)
        http.post(f"{control(sandbox)}/webhooks/integration-created", data="{}", timeout=5)
        events = [json.loads(b) for _, _, b in receiver.received]
        assert len({e["id"] for e in events}) == 3
        assert re.fullmatch(r"recruitee:[A-Za-z0-9]{24}", events[1]["data"]["id"])
        assert events[1]["data"]["id"] != events[2]["data"]["id"]
        assert events[1]["data"]["end_user"]["organization_name"].startswith("Sandbox customer")
        assert sandbox.requests() == []  # control calls are not Kombo requests


def test_the_webhook_url_and_secret_can_be_overridden_and_the_apps_status_is_reported(http, receiver):
    refusing = _App(status=401)
    try:
        with KomboSandbox(webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET) as sandbox:
            r = http.post(f"{control(sandbox)}/webhooks/integration-created",
                          json={"url": refusing.url, "secret": "other-secret", "category": "ATS"}, timeout=5)
            assert r.status_code == 200 and r.json()["status"] == 401  # the app's answer, reported
            assert "other-secret" not in r.text
            (_, sent_headers, body), = refusing.received
            assert sent_headers["X-Kombo-Signature"] == kombo_signature(body, "other-secret")
            assert json.loads(body)["data"]["category"] == "ATS" and receiver.received == []
    finally:
        refusing.close()


def test_send_and_deliver_webhook_in_process(receiver):
    with KomboSandbox(webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET) as sandbox:
        sent = sandbox.send_webhook(id="recruitee:X1", event_id="evt_fixed", organization_name="Acme")
        assert sent["status"] == 200 and sent["event"]["id"] == "evt_fixed"
        assert sandbox.deliver_webhook(b"raw", signature=None)["status"] == 200
        assert sandbox.deliver_webhook(b"raw", signature="forged")["status"] == 200
        signed = sandbox.deliver_webhook(b"raw")
        assert signed["signature"] == kombo_signature(b"raw")
        headers_sent = [h for _, h, _ in receiver.received]
        assert "X-Kombo-Signature" not in headers_sent[1]
        assert headers_sent[2]["X-Kombo-Signature"] == "forged"
        with pytest.raises(ValueError, match="integration id"):
            sandbox.send_webhook(id="no-colon")


def test_webhook_control_endpoint_errors(http):
    with KomboSandbox() as unconfigured:
        r = http.post(f"{control(unconfigured)}/webhooks/integration-created", json={}, timeout=5)
        assert r.status_code == 400 and "--webhook-url" in r.json()["error"]["message"]
        r = http.post(f"{control(unconfigured)}/webhooks/integration-created",
                      json={"url": "http://127.0.0.1:9/webhooks/kombo/"}, timeout=5)
        assert r.status_code == 400 and "--webhook-secret-env" in r.json()["error"]["message"]
    dead = f"http://127.0.0.1:{_free_port()}/webhooks/kombo/"
    with KomboSandbox(webhook_url=dead, webhook_secret=WEBHOOK_SECRET) as sandbox:
        endpoint = f"{control(sandbox)}/webhooks/integration-created"
        r = http.post(endpoint, json={}, timeout=5)
        assert r.status_code == 502 and dead in r.json()["error"]["message"]
        assert WEBHOOK_SECRET not in r.text
        for body, message in [({"id": "no-colon"}, "integration id"), ({"nope": 1}, "unknown fields: nope"),
                              ({"organization_name": 3}, "organization_name must be a string"),
                              ({"url": "ftp://x/"}, "http:// or https://"), ([], "JSON object")]:
            r = http.post(endpoint, json=body, timeout=5)
            assert r.status_code == 400 and message in r.json()["error"]["message"], (body, r.text)
        assert http.post(endpoint, data="{oops", timeout=5).status_code == 400
        assert http.get(endpoint, timeout=5).status_code == 405


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- orders and packages added outside the product (issue 12) ----------------------------------------


def orders(http, sandbox, integration=IID, **params):
    return http.get(f"{sandbox.url}/assessment/orders", params=params, headers=headers(integration), timeout=5)


def test_orders_are_paged_with_next_until_null_and_filtered_by_status(http, sandbox):
    sandbox.add_orders(IID, package_id="1001", count=260)
    sandbox.add_orders(IID, [{"package_id": "1002"}, {"package_id": "1002", "status": "COMPLETED"}])
    sandbox.add_orders("recruitee:Other", package_id="1001", count=5)  # another integration's
    seen, cursor, pages = [], None, 0
    while True:
        params = {"statuses": "OPEN", "page_size": 250} | ({"cursor": cursor} if cursor else {})
        r = orders(http, sandbox, **params)
        assert r.status_code == 200 and r.json()["status"] == "success"
        data = r.json()["data"]
        pages += 1
        seen += data["results"]
        cursor = data["next"]
        if cursor is None:
            break
        assert pages == 1 and cursor == "eyJvZmZzZXQiOjI1MH0"  # as in examples.json
    assert pages == 2 and len(seen) == 261 and {o["status"] for o in seen} == {"OPEN"}
    assert len({o["id"] for o in seen}) == 261
    assert sum(o["package_id"] == "1002" for o in seen) == 1
    first = seen[0]
    assert set(first) == {"id", "package_id", "status", "candidate", "application", "job"}
    # Without a filter every status; the default page is 100.
    r = orders(http, sandbox)
    assert len(r.json()["data"]["results"]) == 100 and r.json()["data"]["next"]
    assert [o["status"] for o in orders(http, sandbox, statuses="COMPLETED").json()["data"]["results"]] == ["COMPLETED"]


def test_orders_refuse_a_wrong_page_size_status_or_cursor_and_other_methods(http, sandbox):
    for params, text in (({"page_size": 251}, "page_size"), ({"page_size": 0}, "page_size"),
                         ({"statuses": "OPEN,DONE"}, "DONE"), ({"cursor": "not-a-cursor"}, "cursor")):
        error = assert_error(orders(http, sandbox, **params), 400, "PLATFORM.INPUT_INVALID")
        assert text in error["message"]
    r = http.put(f"{sandbox.url}/assessment/orders", data="{}", headers=headers(), timeout=5)
    assert_error(r, 405, None)
    assert r.headers["Allow"] == "GET"
    assert_error(orders(http, sandbox, "notfound:X1"), 404, "PLATFORM.INTEGRATION_NOT_FOUND")


def test_a_fault_can_target_the_orders_path_only(http, sandbox):
    sandbox.enqueue_fault(Fault(status=503, body="<html>busy</html>", path="/assessment/orders"))
    assert get(http, sandbox).status_code == 200  # not the packages read
    assert orders(http, sandbox).status_code == 503
    assert orders(http, sandbox).status_code == 200  # consumed


def test_packages_added_outside_the_product_are_listed_then_deleted_by_a_put(http, sandbox):
    put(http, sandbox, [pkg("1001")])
    sandbox.add_packages(IID, [{"id": "legacy-7", "name": "Old test", "description": None, "type": None}])
    listed = get(http, sandbox).json()["data"]["packages"]
    assert [p["id"] for p in listed] == ["1001", "legacy-7"]
    assert listed[1]["type"] is None and listed[1]["description"] is None and listed[1]["updated_at"]
    put(http, sandbox, [pkg("1001")])
    assert sandbox.deleted_ids(IID) == ["legacy-7"]
    with pytest.raises(ValueError, match="name"):
        sandbox.add_packages(IID, [{"id": "x"}])


def test_control_endpoints_seed_packages_and_orders_over_http(http, sandbox):
    base = f"{sandbox.base_url}/_sandbox"
    r = http.post(f"{base}/packages", json={"integration_id": IID, "packages": [{"id": "k1", "name": "Kombo only"}]},
                  timeout=5)
    assert r.status_code == 204
    r = http.post(f"{base}/orders", json={"integration_id": IID, "package_id": "k1", "count": 3}, timeout=5)
    assert r.status_code == 204
    r = http.post(f"{base}/orders", json={"integration_id": IID, "orders": [{"package_id": "k2", "status": "REJECTED"}]},
                  timeout=5)
    assert r.status_code == 204
    assert [p["id"] for p in get(http, sandbox).json()["data"]["packages"]] == ["k1"]
    assert [o["package_id"] for o in orders(http, sandbox, statuses="OPEN").json()["data"]["results"]] == ["k1"] * 3
    state = http.get(f"{base}/state", timeout=5).json()[IID]
    assert len(state["orders"]) == 4
    for payload, text in (({"integration_id": IID, "orders": [{"package_id": "k1", "status": "LATE"}]}, "status"),
                          ({"integration_id": "no-colon", "package_id": "k1", "count": 1}, "integration_id"),
                          ({"integration_id": IID, "colour": "red"}, "unknown fields")):
        r = http.post(f"{base}/orders", json=payload, timeout=5)
        assert r.status_code == 400 and text in r.json()["error"]["message"]
    sandbox.reset()
    assert orders(http, sandbox).json()["data"] == {"next": None, "results": []}
