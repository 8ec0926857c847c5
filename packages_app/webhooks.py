"""POST /webhooks/kombo/: Kombo's signed webhooks. The signature is checked over the raw bytes before
anything is parsed or written; the event is stored once by its id and processed by a worker
(packages_app.webhook_events), so Kombo gets its answer in milliseconds."""
import base64
import hashlib
import hmac
import json
import logging

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import webhook_events

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Kombo-Signature"
MAX_BODY_BYTES = 1024 * 1024  # 1 MiB: Kombo's events are a few hundred bytes


def sign(body: bytes, secret: str) -> str:
    """base64url(HMAC-SHA256(body, secret)), with padding: what Kombo sends in X-Kombo-Signature."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def signature_matches(body: bytes, secret: str, given: str | None) -> bool:
    """Constant-time comparison over the raw bytes; base64 padding is optional."""
    if not given:
        return False
    expected = sign(body, secret).rstrip("=").encode("ascii")
    # Bytes, not str: compare_digest refuses non-ASCII str, and a header may hold anything.
    return hmac.compare_digest(expected, given.strip().rstrip("=").encode("utf-8", "replace"))


def _answer(status, message, **extra):
    return JsonResponse({"status": "error" if status >= 400 else "ok", "message": message, **extra},
                        status=status)


def _declared_length(request):
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None


def _storable(event):
    """PostgreSQL's jsonb refuses NUL and unpaired surrogates: refuse them with a 400, not a 500
    (which Kombo would retry for days)."""
    text = json.dumps(event)
    if "\\u0000" in text:
        return False
    try:
        json.dumps(event, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@csrf_exempt  # Kombo signs its requests; there is no browser session to protect here
@require_POST
def kombo_webhook(request):
    secret = settings.KOMBO_WEBHOOK_SECRET
    if not secret:
        # Said in the log on every refused request, so whoever runs the app sees why Kombo's
        # deliveries fail; the answer tells the sender nothing about the configuration.
        logger.error("Kombo webhook refused with 503: KOMBO_WEBHOOK_SECRET is not set. Set it to the "
                     "secret Kombo's dashboard shows for this endpoint (README, \"Kombo webhooks\").")
        return _answer(503, "Webhooks are not configured.")
    declared = _declared_length(request)
    if declared is None:
        return _answer(400, "Invalid Content-Length.")
    if declared > MAX_BODY_BYTES:
        return _answer(413, f"The body is larger than {MAX_BODY_BYTES} bytes.")
    # Never more than the limit in memory, whatever the header said.
    body = request.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        return _answer(413, f"The body is larger than {MAX_BODY_BYTES} bytes.")
    if not signature_matches(body, secret, request.headers.get(SIGNATURE_HEADER)):
        logger.warning("Kombo webhook refused with 401: the %s header is %s.", SIGNATURE_HEADER,
                       "wrong" if request.headers.get(SIGNATURE_HEADER) else "missing")
        return _answer(401, "Missing or invalid signature.")

    try:
        event = json.loads(body)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, absurdly nested
        return _answer(400, "The body is not valid JSON.")
    if not isinstance(event, dict):
        return _answer(400, "The body must be a JSON object.")
    event_id, event_type = event.get("id"), event.get("type")
    if not (isinstance(event_id, str) and 0 < len(event_id) <= 255 and event_id.isprintable()):
        return _answer(400, "The event has no usable id.")
    if not (isinstance(event_type, str) and 0 < len(event_type) <= 100):
        return _answer(400, "The event has no usable type.")

    if not _storable(event):
        return _answer(400, "The body holds characters that cannot be stored (NUL, unpaired surrogates).")

    _, created = webhook_events.webhook_event_receive(event_id=event_id, event_type=event_type,
                                                           payload=event)
    if not created:
        return _answer(200, "Already received.", event_id=event_id)
    return _answer(200, "Received.", event_id=event_id)
