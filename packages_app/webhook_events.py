"""Kombo's webhooks once their signature is checked (packages_app/webhooks.py): each event stored
once by its id, then acted on in a worker: `integration-created` creates the integration with the
default plan and queues its first publish, `integration-deleted` pauses it; others are kept."""
import logging
import re
from dataclasses import dataclass
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import ngettext

from . import history, publishing, selectors
from .publish_review import publish_review
from .models import (
    Integration,
    Plan,
    SyncStatus,
    WebhookEvent,
    integration_id_validator,
)

logger = logging.getLogger(__name__)

PROCESS_TASK = "packages_app.tasks.process_webhook_event"
# An event still unprocessed this long after it arrived is queued again by the sweep (the broker
# was down, or its worker died): processing twice is harmless, the second finds it done.
STUCK_SECONDS = 60
SWEEP_BATCH = 500
ASSESSMENT = "ASSESSMENT"
Outcome = WebhookEvent.Outcome


# --- receiving (the view) -------------------------------------------------------------------

def webhook_event_receive(*, event_id, event_type, payload):
    """Store the event unless an event with this id was stored before, and queue its processing
    once the row is committed. Returns (event, created): created is False for a redelivery, which
    queues nothing."""
    with transaction.atomic():
        # get_or_create catches the unique violation of a concurrent redelivery and reads its row.
        event, created = WebhookEvent.objects.get_or_create(
            event_id=event_id, defaults={"type": event_type, "payload": payload})
        if created:
            transaction.on_commit(lambda: webhook_event_enqueue(event_pk=event.pk))
    return event, created


def webhook_event_enqueue(*, event_pk):
    """Hand one event to the broker, by task name; True if it took it. If it is unreachable the
    event stays unprocessed and the sweep queues it later: Kombo got its 200 all the same."""
    try:
        current_app.send_task(PROCESS_TASK, args=[event_pk], retry=True,
                              retry_policy=publishing.queueing.SEND_RETRY_POLICY)
        return True
    except Exception as exc:  # any broker or transport failure
        logger.warning("Webhook event %s is saved but could not be queued (%s); the sweep will queue it.",
                       event_pk, type(exc).__name__)
        return False


def webhook_events_sweep(*, older_than_seconds=STUCK_SECONDS):
    """Queue again the events still unprocessed a while after they arrived; returns their pks."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    pks = list(WebhookEvent.objects.filter(processed_at__isnull=True, received_at__lt=cutoff)
               .order_by("pk").values_list("pk", flat=True)[:SWEEP_BATCH])
    for pk in pks:
        webhook_event_enqueue(event_pk=pk)
    return pks


# --- processing (the worker) ----------------------------------------------------------------

@dataclass
class Result:
    outcome: str
    detail: str = ""
    integration: Integration | None = None
    error: str = ""


def webhook_event_process(*, event_pk):
    """Act on one stored event, once: the row is locked while it is processed and marked
    processed in the same transaction, so a duplicate message (a redelivery of the task, the
    sweep) waits and then finds it done. A worker that dies leaves it unprocessed for the sweep.
    Returns the outcome."""
    with transaction.atomic():
        event = WebhookEvent.objects.select_for_update().filter(pk=event_pk).first()
        if event is None or event.processed_at is not None:
            return event.outcome if event else None
        handler = HANDLERS.get(event.type, _other_type)
        try:
            with transaction.atomic():  # a failure undoes the handler's writes, not the record of it
                result = handler(event)
        except Exception as exc:
            logger.exception("Webhook event %s (%s) could not be processed.", event.event_id, event.type)
            result = Result(Outcome.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000])
        event.outcome, event.detail, event.error = result.outcome, result.detail, result.error
        event.integration = result.integration
        event.processed_at = timezone.now()
        event.save(update_fields=["outcome", "detail", "error", "integration", "processed_at"])
    logger.info("Webhook event %s (%s): %s. %s", event.event_id, event.type, event.outcome, event.detail)
    return event.outcome


def _data(event):
    data = event.payload.get("data") if isinstance(event.payload, dict) else None
    return data if isinstance(data, dict) else {}


def _integration_id(data):
    """data.id if it is a Kombo integration id as this app stores them; raises ValueError."""
    value = data.get("id")
    if not isinstance(value, str) or len(value) > Integration._meta.get_field("kombo_integration_id").max_length:
        raise ValueError(f"data.id {value!r} is not a Kombo integration id.")
    try:
        integration_id_validator(value)
    except ValidationError:
        raise ValueError(f"data.id {value!r} is not a Kombo integration id (tool:identifier).") from None
    return value


_NOT_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+")


def _customer_name(data, fallback):
    """The end user's organisation name, made a clean single line (the admin's rules), else the id."""
    end_user = data.get("end_user")
    name = end_user.get("organization_name") if isinstance(end_user, dict) else None
    if not isinstance(name, str):
        return fallback
    name = " ".join(_NOT_TEXT.sub(" ", name).split())
    limit = Integration._meta.get_field("name").max_length
    if len(name) > limit:
        name = name[:limit - 1].rstrip() + "…"
    return name or fallback


def _integration_created(event):
    data = _data(event)
    category = data.get("category")
    if category != ASSESSMENT:
        return Result(Outcome.IGNORED, f"Category {category!r}: only {ASSESSMENT} integrations are "
                                       "an assessment vendor's customers.")
    try:
        kombo_id = _integration_id(data)
    except ValueError as exc:
        return Result(Outcome.FAILED, error=str(exc))
    plan = Plan.objects.filter(is_default=True).first()
    integration, created = Integration.objects.get_or_create(
        kombo_integration_id=kombo_id,
        defaults={"name": _customer_name(data, kombo_id), "region": settings.KOMBO_WEBHOOK_REGION,
                  "created_by_webhook": True},
    )
    if created:
        if plan is not None:
            integration.plans.add(plan)
        with_plan = f", with the default plan “{plan}”" if plan else ", without a plan (no plan is the default)"
        history.record_addition(user=None, obj=integration,
                                via=f"Kombo's integration-created webhook (event {event.event_id}){with_plan}")
    published, why = _publish_if_out_of_sync(integration)
    if created:
        head = f"Created {integration}" + (f" with the plan “{plan}”" if plan else " without a plan: no plan is the default")
        return Result(Outcome.CREATED, f"{head}; {why}", integration)
    head = f"{integration} exists already (not created again)"
    return Result(Outcome.PUBLISHED if published else Outcome.UNCHANGED, f"{head}; {why}", integration)


def _publish_if_out_of_sync(integration):
    """Queue a publish of the integration through the same services and guards as staff's, if
    what it offers differs from what Kombo holds and nothing needs a person's decision.
    Returns (publication or None, why, in words)."""
    for _ in range(2):  # once more if its packages changed between the preview and the create
        (preview,) = selectors.integrations_preview(Integration.objects.filter(pk=integration.pk))
        if preview.paused:
            return None, "it is paused: nothing published."
        if preview.sync_status == SyncStatus.PUBLISHING:
            return None, "a publication is on its way to Kombo already."
        if preview.in_sync:
            return None, "Kombo holds its packages already: nothing published."
        if not preview.plan.body["packages"]:
            return None, ("it offers no package: nothing published (an empty list would mark "
                          "packages deleted). Give it a plan or packages and publish it.")
        # What Kombo holds now counts, as on staff's confirmation page: a new connection may
        # already carry packages there (a reconnect, another system) that this publish deletes.
        (reviewed,) = publish_review([preview]).previews
        if reviewed.needs_removal_confirmation:
            return None, gettext("publishing needs staff's confirmation (it %(reasons)s): publish it from the "
                           "admin.") % {"reasons": "; ".join(reviewed.tick_reason_texts)}
        try:
            (publication,) = publishing.publications_create(
                integrations=[integration], expected_sha256={integration.pk: preview.plan.sha256})
        except publishing.CatalogueChanged:
            continue
        except publishing.IntegrationPaused:
            return None, "it is paused: nothing published."
        packages = len(preview.plan.body["packages"])
        return publication, ngettext("publication #%(pk)s of %(count)s package queued.",
                                     "publication #%(pk)s of %(count)s packages queued.", packages) % {
            "pk": publication.pk, "count": packages}
    return None, "its packages kept changing while it was being published: publish it from the admin."


def _integration_deleted(event):
    data = _data(event)
    kombo_id = data.get("id")
    integration = Integration.objects.filter(kombo_integration_id=kombo_id).first() \
        if isinstance(kombo_id, str) else None
    if integration is None:
        return Result(Outcome.IGNORED, f"No integration {kombo_id!r} here: nothing to pause.")
    was_active = integration.is_active
    _, ended, ending = publishing.integrations_pause(integration_ids=[integration.pk])
    when = data.get("deleted_at")
    via = f"Kombo's integration-deleted webhook (event {event.event_id})"
    if was_active:
        history.record_change(user=None, obj=integration, changes={"active": (True, False)}, via=via)
    parts = [f"Paused {integration}" if was_active else f"{integration} was paused already",
             f"(deleted at Kombo{f' at {when}' if isinstance(when, str) else ''}); its publications are kept"]
    if ended or ending:
        parts.append(f"; {ended} cancelled now, {ending} cancelled when their request returns")
    return Result(Outcome.PAUSED, " ".join(parts[:2]) + "".join(parts[2:]) + ".", integration)


def _other_type(event):
    return Result(Outcome.IGNORED, f"Event type {event.type!r}: acknowledged, nothing to do.")


HANDLERS = {
    "integration-created": _integration_created,
    "integration-deleted": _integration_deleted,
}
