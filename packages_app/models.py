"""The catalogue (AssessmentPackage), customer connections (Integration) and the publishing ledger
(Publication and its PublicationAttempts). Sync status is derived here, never stored."""
import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator, RegexValidator
from django.db import models
from django.db.models import OuterRef, Prefetch, Q, Subquery

from . import payloads


class PackageType(models.TextChoices):
    BEHAVIORAL = "BEHAVIORAL", "Behavioral"
    VIDEO_INTERVIEW = "VIDEO_INTERVIEW", "Video interview"
    SKILLS_TEST = "SKILLS_TEST", "Skills test"
    BACKGROUND_CHECK = "BACKGROUND_CHECK", "Background check"
    REFERENCE_CHECK = "REFERENCE_CHECK", "Reference check"


# C0 and C1 control characters, and Unicode's own line and paragraph separators.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def validate_clean_text(value):
    """Refuse values Kombo and the ATSs would show wrongly: blank, padded, or not UTF-8."""
    if not value or not value.strip():
        raise ValidationError("This field cannot be blank.", code="blank")
    if value != value.strip():
        raise ValidationError("Remove the spaces at the start or end.", code="padded")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            "Contains characters that are not valid Unicode text (unpaired surrogates).",
            code="invalid_unicode",
        ) from None


def validate_no_control_characters(value):
    if _CONTROL_CHARACTERS.search(value or ""):
        raise ValidationError(
            "Remove control characters (such as tabs or zero bytes).", code="control_characters"
        )


def validate_single_line_text(value):
    validate_clean_text(value)
    validate_no_control_characters(value)


def validate_description(value):
    validate_clean_text(value)
    # Line breaks are fine in a description; other control characters are not.
    if _CONTROL_CHARACTERS.search((value or "").replace("\r\n", "").replace("\n", "")):
        raise ValidationError(
            "Remove control characters other than line breaks.", code="control_characters"
        )


integration_id_validator = RegexValidator(
    regex=r"^[A-Za-z0-9][A-Za-z0-9_.-]*:[A-Za-z0-9_.-]+$",
    message=(
        'Enter the Kombo integration id as "tool:identifier", '
        'for example "recruitee:HWUTwvyx2wLoSUHphiWVrp28".'
    ),
    code="invalid_integration_id",
)


class AssessmentPackage(models.Model):
    package_id = models.CharField(
        "package id",
        max_length=100,
        unique=True,
        validators=[validate_single_line_text],
        help_text="The id Kombo receives. Stable: never reuse it for another package.",
    )
    type = models.CharField(max_length=32, choices=PackageType.choices)
    name = models.CharField(max_length=200, validators=[validate_single_line_text])
    # A TextField's max_length reaches forms only; the validator holds it for imports too.
    description = models.TextField(
        max_length=4000, validators=[MaxLengthValidator(4000), validate_description]
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["package_id"]
        verbose_name = "assessment package"

    def __str__(self):
        return f"{self.name} ({self.package_id})"


class Plan(models.Model):
    """A named set of packages ("Standard", "Enterprise"): an integration offers the union of its
    plans' packages and of the packages chosen for it alone."""

    name = models.CharField(max_length=200, unique=True, validators=[validate_single_line_text])
    description = models.TextField(
        blank=True, max_length=4000, validators=[MaxLengthValidator(4000)],
        help_text="For staff: who this plan is for. Not sent to Kombo.",
    )
    packages = models.ManyToManyField(
        AssessmentPackage, blank=True, related_name="plans",
        help_text="Every integration on this plan offers these packages (and those chosen for it alone).",
    )
    is_default = models.BooleanField(
        "default for new integrations", default=False,
        help_text="Integrations created by Kombo's integration-created webhook get this plan. "
                  "At most one plan is the default.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="one_default_plan",
                violation_error_message="Another plan is already the default for new integrations: "
                                        "untick it there first.",
            ),
        ]

    def __str__(self):
        return self.name


class Region(models.TextChoices):
    EU = "EU", "EU"
    US = "US", "US"


class SyncStatus(models.TextChoices):
    NEVER_PUBLISHED = "never_published", "Never published"
    IN_SYNC = "in_sync", "In sync"
    CHANGED = "changed", "Changed since last publish"
    PUBLISHING = "publishing", "Publishing"
    FAILED = "failed", "Last publish did not complete"


class IntegrationQuerySet(models.QuerySet):
    def with_sync_state(self):
        """Everything sync status needs, in a constant number of queries whatever the row count."""
        latest = Publication.objects.filter(integration=OuterRef("pk")).order_by("-pk")
        succeeded = latest.accepted()
        return self.annotate(
            latest_publication_status=Subquery(latest.values("status")[:1]),
            last_succeeded_sha256=Subquery(succeeded.values("body_sha256")[:1]),
            last_published_at=Subquery(succeeded.values("finished_at")[:1]),
        ).with_offered_packages()

    def with_offered_packages(self):
        """Prefetch what the integrations offer: their own packages and their plans' packages
        (four queries whatever the row count; see Integration.packages_offered)."""
        fields = ("package_id", "type", "name", "description")
        return self.prefetch_related(
            Prefetch("packages", queryset=AssessmentPackage.objects.only(*fields)),
            Prefetch("plans", queryset=Plan.objects.only("pk").prefetch_related(
                Prefetch("packages", queryset=AssessmentPackage.objects.only(*fields)))),
        )

    def offered_packages(self):
        """`({integration pk: [package pk, ...]}, {package pk: (package_id, type, name,
        description)})` for these integrations, each offering the union of its own packages and
        its plans' packages: four queries and no model instances, for publishing thousands of
        integrations at once. A plan's packages are read once, not once per integration on it, and
        integrations on the same plans with nothing of their own share one list (read-only)."""
        pks = list(self.values_list("pk", flat=True))
        own = {pk: [] for pk in pks}
        own_links = Integration.packages.through.objects.filter(integration_id__in=pks)
        for integration_id, package_pk in own_links.values_list("integration_id", "assessmentpackage_id"):
            own[integration_id].append(package_pk)
        plans_of = {}
        for integration_id, plan_id in Integration.plans.through.objects.filter(
                integration_id__in=pks).values_list("integration_id", "plan_id"):
            plans_of.setdefault(integration_id, []).append(plan_id)
        plan_packages = {}
        for plan_id, package_pk in Plan.packages.through.objects.filter(
                plan_id__in={p for plans in plans_of.values() for p in plans}).values_list("plan_id", "assessmentpackage_id"):
            plan_packages.setdefault(plan_id, []).append(package_pk)
        packages = AssessmentPackage.objects.filter(
            Q(pk__in=own_links.values("assessmentpackage_id"))
            | Q(pk__in={p for linked in plan_packages.values() for p in linked}))
        rows = {pk: tuple(values) for pk, *values in
                packages.values_list("pk", "package_id", "type", "name", "description")}
        by_plans = {}  # the packages of one combination of plans; a package deleted meanwhile is dropped
        offered = {}
        for pk in pks:
            plans = tuple(sorted(plans_of.get(pk, ())))
            if plans not in by_plans:
                by_plans[plans] = [p for p in dict.fromkeys(p for plan in plans for p in plan_packages.get(plan, ()))
                                   if p in rows]
            if own[pk]:
                offered[pk] = [p for p in dict.fromkeys([*by_plans[plans], *own[pk]]) if p in rows]
            else:
                offered[pk] = by_plans[plans]
        return offered, rows


class Integration(models.Model):
    kombo_integration_id = models.CharField(
        "Kombo integration id",
        max_length=255,
        unique=True,
        validators=[integration_id_validator],
        help_text='As Kombo shows it: the ATS tool, a colon, an id ("recruitee:HWUTwvyx2wLoSUHphiWVrp28").',
    )
    name = models.CharField(
        "customer", max_length=200, validators=[validate_single_line_text],
        help_text="The customer's name, as staff know it.",
    )
    region = models.CharField(
        max_length=2, choices=Region.choices, default=Region.EU,
        help_text="Where the customer's Kombo account lives: EU uses api.kombo.dev, US uses api.us.kombo.dev.",
    )
    is_active = models.BooleanField(
        "active", default=True,
        help_text="Paused integrations are not published, not even by bulk actions. An integration "
                  "with publications cannot be deleted (the ledger is kept): pause it instead.",
    )
    plans = models.ManyToManyField(
        Plan, blank=True, related_name="integrations",
        help_text="This customer offers every package of these plans, and the packages below.",
    )
    packages = models.ManyToManyField(
        AssessmentPackage, blank=True, related_name="integrations",
        verbose_name="packages for this customer alone",
        help_text="Packages this customer can order besides those of its plans.",
    )
    created_by_webhook = models.BooleanField(
        "created by webhook", default=False, editable=False,
        help_text="Created by Kombo's integration-created webhook, not by staff.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # A lease, not a status: which run may talk to Kombo for this integration right now (its
    # token), and until when. It keeps one request per integration in flight across all workers.
    publish_lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    publish_lease_token = models.CharField(max_length=32, blank=True, editable=False)

    objects = IntegrationQuerySet.as_manager()

    LEASE_FIELDS = ("publish_lease_until", "publish_lease_token")

    def save(self, *args, **kwargs):
        # A full save writes back the lease as it was read: an admin edit would then undo a
        # worker's lease taken meanwhile. Only the workers' own UPDATEs touch the lease.
        if not self._state.adding and kwargs.get("update_fields") is None and not kwargs.get("force_insert"):
            kwargs["update_fields"] = [
                f.name for f in self._meta.concrete_fields
                if not f.primary_key and f.name not in self.LEASE_FIELDS
            ]
        super().save(*args, **kwargs)

    class Meta:
        ordering = ["name"]
        permissions = [("publish_integration", "Can publish packages to Kombo")]

    def __str__(self):
        return f"{self.name} ({self.kombo_integration_id})"

    def packages_offered(self):
        """The packages this integration offers: its own and its plans', each once. Uses what
        with_offered_packages() prefetched; one query otherwise."""
        cache = getattr(self, "_prefetched_objects_cache", {})
        if "packages" in cache and "plans" in cache:
            offered = {p.pk: p for p in self.packages.all()}
            for plan in self.plans.all():
                for package in plan.packages.all():
                    offered.setdefault(package.pk, package)
            return list(offered.values())
        if self.pk is None:
            return []
        return list(AssessmentPackage.objects.filter(
            Q(pk__in=Integration.packages.through.objects.filter(integration_id=self.pk)
              .values("assessmentpackage_id"))
            | Q(pk__in=Plan.packages.through.objects.filter(plan__integrations=self.pk)
                .values("assessmentpackage_id"))))

    def current_body(self):
        """The request body the catalogue gives this integration now: its own packages and its
        plans' packages (uses prefetched ones, see packages_offered)."""
        return payloads.build_body(self.packages_offered())

    def current_sha256(self):
        return payloads.body_sha256(payloads.canonical_bytes(self.current_body()))

    @property
    def sync_status(self):
        if not hasattr(self, "latest_publication_status"):
            annotated = Integration.objects.with_sync_state().get(pk=self.pk)
            self.latest_publication_status = annotated.latest_publication_status
            self.last_succeeded_sha256 = annotated.last_succeeded_sha256
            self.last_published_at = annotated.last_published_at
        latest = self.latest_publication_status
        if latest in Publication.ACTIVE_STATUSES:
            return SyncStatus.PUBLISHING
        if latest in Publication.INCOMPLETE_STATUSES:
            return SyncStatus.FAILED
        if self.last_succeeded_sha256 is None:
            return SyncStatus.NEVER_PUBLISHED
        if self.last_succeeded_sha256 == self.current_sha256():
            return SyncStatus.IN_SYNC
        return SyncStatus.CHANGED

    @property
    def sync_status_label(self):
        return SyncStatus(self.sync_status).label


# Publications whose list Kombo took: succeeded, or cancelled while in flight after Kombo had
# answered 2xx (its list is at Kombo all the same). What Kombo holds is the newest of them.
ACCEPTED = Q(status="succeeded") | Q(status="cancelled", http_status__gte=200, http_status__lt=300)


class PublicationQuerySet(models.QuerySet):
    def accepted(self):
        return self.filter(ACCEPTED)


class Publication(models.Model):
    """One request to publish one integration, and its whole story. Never edited by hand."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        RETRYING = "retrying", "Retrying"
        WAITING = "waiting", "Waiting for the customer's first sync"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SUPERSEDED = "superseded", "Superseded by a newer publication"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE_STATUSES = (Status.QUEUED, Status.SENDING, Status.RETRYING, Status.WAITING)
    # Active and not in flight: what may be superseded or cancelled without the lease.
    RESTING_STATUSES = (Status.QUEUED, Status.RETRYING, Status.WAITING)
    FINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.SUPERSEDED, Status.CANCELLED)
    # Ended without Kombo taking the list: the integration's "last publish did not complete".
    INCOMPLETE_STATUSES = (Status.FAILED, Status.CANCELLED)

    integration = models.ForeignKey(
        Integration, on_delete=models.PROTECT, related_name="publications"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+", help_text="Empty when started by a script.",
    )
    requested_at = models.DateTimeField(auto_now_add=True, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    body = models.TextField(help_text="The exact bytes sent to Kombo (UTF-8 JSON), snapshotted at creation.")
    body_sha256 = models.CharField("body SHA-256", max_length=64)
    package_count = models.PositiveIntegerField(default=0)
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="When the task was last handed to the broker."
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField("HTTP status", null=True, blank=True)
    response_body = models.TextField(blank=True)
    warnings = models.JSONField(default=list, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    error_title = models.CharField(max_length=500, blank=True)
    error_message = models.TextField(blank=True)
    error_log_url = models.URLField("Kombo log URL", max_length=1000, blank=True)
    failure_reason = models.TextField(
        blank=True, help_text="Why the publication failed or is retrying, in plain words."
    )
    rate_limit_headers = models.JSONField(
        default=dict, blank=True,
        help_text="ratelimit-* and Concurrency-* headers of the last response.",
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The token of the run that last took this publication (the integration's lease token while
    # that run holds it): every write after the take names it, so a run that lost its lease
    # cannot change the row.
    lease_token = models.CharField(max_length=32, blank=True, editable=False)
    cancel_requested_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="Staff asked to cancel it, or paused the integration; one in flight ends as "
                  "cancelled when its request returns.",
    )
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+", editable=False,
    )
    cancel_reason = models.CharField(max_length=500, blank=True, editable=False)

    objects = PublicationQuerySet.as_manager()

    class Meta:
        ordering = ["-pk"]
        indexes = [
            # The latest publication of an integration (its sync status, the publications list).
            models.Index(fields=["integration", "-id"]),
            # The latest accepted one (the baseline of every diff), however many failed since.
            models.Index(fields=["integration", "-id"], name="publication_accepted_idx",
                         condition=ACCEPTED),
        ]

    def __str__(self):
        return f"Publication #{self.pk} of {self.integration_id}"

    @property
    def is_final(self):
        return self.status in self.FINAL_STATUSES

    def body_dict(self):
        return payloads.parse_body(self.body)


class PublicationAttempt(models.Model):
    """One HTTP request made for a publication (or one that could not be made)."""

    publication = models.ForeignKey(Publication, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField("HTTP status", null=True, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    outcome = models.CharField(max_length=32, blank=True)
    message = models.TextField(blank=True)
    wait_seconds = models.FloatField(
        null=True, blank=True, help_text="How long the publication waited before its next attempt."
    )

    class Meta:
        ordering = ["publication", "number"]
        constraints = [
            models.UniqueConstraint(fields=["publication", "number"], name="unique_attempt_number")
        ]


class WebhookEvent(models.Model):
    """One event Kombo posted to /webhooks/kombo/, stored once by its id, and what came of it.
    Written by packages_app.webhook_events only; never edited by hand."""

    class Outcome(models.TextChoices):
        RECEIVED = "received", "Received, not processed yet"
        CREATED = "created", "Integration created"
        PUBLISHED = "published", "Publication queued"
        UNCHANGED = "unchanged", "Nothing to do"
        PAUSED = "paused", "Integration paused"
        IGNORED = "ignored", "Ignored"
        FAILED = "failed", "Failed"

    event_id = models.CharField("event id", max_length=255, unique=True,
                                help_text="Kombo's id of the event: a redelivery carries the same one.")
    type = models.CharField(max_length=100, db_index=True)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    payload = models.JSONField(help_text="The event Kombo sent, parsed (its signature was checked over the raw bytes).")
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RECEIVED,
                               db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    integration = models.ForeignKey(
        Integration, null=True, blank=True, on_delete=models.SET_NULL, related_name="webhook_events",
        help_text="The integration the event created or changed.",
    )
    detail = models.TextField(blank=True, help_text="What happened, in plain words.")
    error = models.TextField(blank=True, help_text="Why processing failed.")

    class Meta:
        ordering = ["-received_at", "-pk"]
        verbose_name = "webhook event"

    def __str__(self):
        return f"{self.type} {self.event_id}"
