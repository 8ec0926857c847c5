"""The catalogue (AssessmentPackage), customer connections (Integration) and the publishing ledger
(Publication and its PublicationAttempts). Sync status is derived (selectors.sync_status_of), never
stored."""
import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator, RegexValidator
from django.db import connection, models
from django.db.models import Case, F, OuterRef, Prefetch, Q, Subquery, Value, When
from django.db.models.functions import Lower
from django.utils.text import format_lazy
from django.utils.translation import gettext, gettext_lazy as _

from . import payloads


class PackageType(models.TextChoices):
    BEHAVIORAL = "BEHAVIORAL", _("Behavioral")
    VIDEO_INTERVIEW = "VIDEO_INTERVIEW", _("Video interview")
    SKILLS_TEST = "SKILLS_TEST", _("Skills test")
    BACKGROUND_CHECK = "BACKGROUND_CHECK", _("Background check")
    REFERENCE_CHECK = "REFERENCE_CHECK", _("Reference check")


# C0 and C1 control characters, and Unicode's own line and paragraph separators.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def validate_clean_text(value):
    """Refuse values Kombo and the ATSs would show wrongly: blank, padded, or not UTF-8."""
    if not value or not value.strip():
        raise ValidationError(_("This field cannot be blank."), code="blank")
    if value != value.strip():
        raise ValidationError(_("Remove the spaces at the start or end."), code="padded")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            _("Contains characters that are not valid Unicode text (unpaired surrogates)."),
            code="invalid_unicode",
        ) from None


def validate_no_control_characters(value):
    if _CONTROL_CHARACTERS.search(value or ""):
        raise ValidationError(
            _("Remove control characters (such as tabs or zero bytes)."), code="control_characters"
        )


def validate_single_line_text(value):
    validate_clean_text(value)
    validate_no_control_characters(value)


def validate_description(value):
    validate_clean_text(value)
    # Line breaks are fine in a description; other control characters are not.
    if _CONTROL_CHARACTERS.search((value or "").replace("\r\n", "").replace("\n", "")):
        raise ValidationError(
            _("Remove control characters other than line breaks."), code="control_characters"
        )


integration_id_validator = RegexValidator(
    regex=r"^[A-Za-z0-9][A-Za-z0-9_.-]*:[A-Za-z0-9_.-]+$",
    message=_(
        'Enter the Kombo integration id as "tool:identifier", '
        'for example "recruitee:HWUTwvyx2wLoSUHphiWVrp28".'
    ),
    code="invalid_integration_id",
)


# What a package id may hold: Kombo's own examples ("1001", "typescript_test") and the ids ATSs
# take as a reference id. ASCII only, so "unique regardless of case" means the same in Python and
# in the database's LOWER(); starting with a letter or digit, so a spreadsheet never reads one as a
# formula. The colon is kept for ids like "vendor:1001" written before this rule.
_PACKAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
PACKAGE_ID_RULE = _("Letters (A–Z, a–z), digits, and _ - . : only, starting with a letter or digit; "
                    "no spaces. Unique regardless of case.")
# ATSs usually show about this many characters of a package's name (peers of Kombo cap it at 50).
PACKAGE_NAME_SHOWN_LENGTH = 50


def validate_package_id(value):
    """The one rule for a package id: the admin's form, the model and the catalogue import use it."""
    validate_single_line_text(value)
    if not _PACKAGE_ID.fullmatch(value):
        if re.search(r"\s", value):
            raise ValidationError(_("Remove the spaces: a package id has none inside. %(rule)s"),
                                  code="package_id_spaces", params={"rule": PACKAGE_ID_RULE})
        raise ValidationError(_("Not a valid package id. %(rule)s"), code="invalid_package_id",
                              params={"rule": PACKAGE_ID_RULE})


def package_id_taken_message(existing):
    """The error when another package has this id, or the same id in another case."""
    return gettext("A package with this id already exists: “%(package)s”. Package ids are unique "
                   "regardless of case.") % {"package": existing}


def package_name_warning(name):
    """A warning (never a refusal) for a name longer than ATSs usually show; None otherwise."""
    if name and len(name) > PACKAGE_NAME_SHOWN_LENGTH:
        return gettext("The name is %(length)d characters long: ATSs usually show about %(shown)d, "
                       "so customers may see it cut short.") % {
            "length": len(name), "shown": PACKAGE_NAME_SHOWN_LENGTH}
    return None


class AssessmentPackage(models.Model):
    package_id = models.CharField(
        _("package id"),
        max_length=100,
        unique=True,
        validators=[validate_package_id],
        help_text=format_lazy(
            "{} {} {}", _("The id Kombo receives."), PACKAGE_ID_RULE,
            _("Stable: never reuse it for another package; changing it once published removes the "
              "package at Kombo and adds a new one.")),
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
        verbose_name = _("assessment package")
        constraints = [
            # "BIG5" beside "big5" reads as one package to staff and to ATSs.
            models.UniqueConstraint(Lower("package_id"), name="package_id_unique_ignoring_case"),
        ]

    def __str__(self):
        return f"{self.name} ({self.package_id})"

    def package_id_clash(self):
        """Another package with this id, in any case; None when there is none."""
        if not self.package_id:
            return None
        return (AssessmentPackage.objects.exclude(pk=self.pk)
                .filter(package_id__iexact=self.package_id).order_by("pk").first())

    def validate_unique(self, exclude=None):
        # The id's uniqueness is validate_constraints' (below), with an error naming the package.
        super().validate_unique(exclude={*(exclude or ()), "package_id"})

    def validate_constraints(self, exclude=None):
        exclude = set(exclude or ())
        if "package_id" not in exclude:
            # package_id_unique_ignoring_case, checked here with a message that names the package
            # already holding the id; Django's own check of it would only repeat the query.
            clash = self.package_id_clash()
            if clash is not None:
                raise ValidationError({"package_id": ValidationError(
                    package_id_taken_message(clash), code="unique")})
        super().validate_constraints(exclude=exclude | {"package_id"})


class Plan(models.Model):
    """A named set of packages ("Standard", "Enterprise"): an integration offers the union of its
    plans' packages and of the packages chosen for it alone."""

    name = models.CharField(max_length=200, unique=True, validators=[validate_single_line_text])
    description = models.TextField(
        blank=True, max_length=4000, validators=[MaxLengthValidator(4000)],
        help_text=_("For staff: who this plan is for. Not sent to Kombo."),
    )
    packages = models.ManyToManyField(
        AssessmentPackage, blank=True, related_name="plans",
        help_text=_("Every integration on this plan offers these packages (and those chosen for it alone)."),
    )
    is_default = models.BooleanField(
        _("default for new integrations"), default=False,
        help_text=_("Integrations created by Kombo's integration-created webhook get this plan. "
                  "At most one plan is the default."),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="one_default_plan",
                violation_error_message=_("Another plan is already the default for new integrations: "
                                        "untick it there first."),
            ),
        ]

    def __str__(self):
        return self.name


class Region(models.TextChoices):
    EU = "EU", _("EU")
    US = "US", _("US")


class SyncStatus(models.TextChoices):
    NEVER_PUBLISHED = "never_published", _("Never published")
    IN_SYNC = "in_sync", _("In sync")
    # In sync with Kombo, but the customer's ATS takes packages by hand (is_manual_import_tool).
    AWAITING_IMPORT = "awaiting_import", _("Published: waiting for the customer's import")
    CHANGED = "changed", _("Changed since last publish")
    PUBLISHING = "publishing", _("Publishing")
    FAILED = "failed", _("Last publish did not complete")


def integration_tool(kombo_integration_id):
    """The ATS tool of a Kombo integration id: "workday" for "workday:HWUTwvyx2w"."""
    return (kombo_integration_id or "").partition(":")[0].strip().lower()


# How staff and customers name the tools Kombo's ids abbreviate.
TOOL_NAMES = {"workday": "Workday", "successfactors": "SAP SuccessFactors"}


def tool_name(kombo_integration_id):
    tool = integration_tool(kombo_integration_id)
    return TOOL_NAMES.get(tool, tool)


def is_manual_import_tool(kombo_integration_id):
    """Whether the customer's ATS takes packages by hand (KOMBO_MANUAL_IMPORT_TOOLS): Kombo holds
    the list, and the customer enters it in the ATS (Workday, SAP SuccessFactors)."""
    tools = {t.strip().lower() for t in getattr(settings, "KOMBO_MANUAL_IMPORT_TOOLS", ()) if t.strip()}
    return integration_tool(kombo_integration_id) in tools


# The sync stage of an integration Kombo holds a list of at its current place: whether that list
# is the catalogue's (in sync) or not (changed) takes the current body's hash, computed in Python.
SYNC_STAGE_PUBLISHED = "published"


def _sync_stage():
    """The part of the sync status the database decides from with_sync_state()'s annotations (see
    selectors.sync_status_of, the one rule that reads it): publishing, failed, never published, or
    SYNC_STAGE_PUBLISHED. A filter on the first three needs no package at all."""
    return Case(
        When(latest_publication_status__in=Publication.ACTIVE_STATUSES, then=Value(SyncStatus.PUBLISHING.value)),
        When(latest_publication_status__in=Publication.INCOMPLETE_STATUSES, then=Value(SyncStatus.FAILED.value)),
        When(last_succeeded_sha256__isnull=True, then=Value(SyncStatus.NEVER_PUBLISHED.value)),
        default=Value(SYNC_STAGE_PUBLISHED), output_field=models.CharField())


def _links(rows, key, value):
    """{key: [value, ...]} of a many-to-many table's `rows`. On PostgreSQL one row a key, with
    the values aggregated (5,000 rows instead of 250,000 for 5,000 integrations of 50 packages)."""
    if connection.vendor == "postgresql":
        from django.contrib.postgres.aggregates import ArrayAgg

        return dict(rows.order_by().values(key).annotate(values=ArrayAgg(value)).values_list(key, "values"))
    linked = {}
    for k, v in rows.values_list(key, value):
        linked.setdefault(k, []).append(v)
    return linked


class IntegrationQuerySet(models.QuerySet):
    def with_sync_state(self, *, dates=True, packages=True):
        """Everything sync status needs, in a constant number of queries whatever the row count:
        the latest publication and the latest accepted one at the integration's current Kombo id
        and region (what was published elsewhere does not count, see Publication.at_place).
        `dates=False` leaves out last_published_at (thousands of rows: parsing it cost more than
        the status); `packages=False` leaves out the packages' prefetch, for callers that read
        them as plain values (publication_plans) or not at all."""
        latest = Publication.objects.filter(integration=OuterRef("pk")).order_by("-pk")
        succeeded = Publication.objects.accepted_of_outer()
        # The status of the integration's latest publication if it went to its current place
        # (NULL otherwise): one walk down the (integration, -id) index. Narrowing the rows to the
        # place first would make PostgreSQL read and sort all of each integration's history
        # (5 s for 5,000 integrations with a million publications, against a few ms).
        latest_here = Case(When(Q(target_kombo_integration_id=OuterRef("kombo_integration_id"),
                                  target_region=OuterRef("region")), then=F("status")), default=Value(None),
                           output_field=models.CharField())
        annotated = self.annotate(
            latest_publication_status=Subquery(latest.annotate(here=latest_here).values("here")[:1]),
            last_succeeded_sha256=Subquery(succeeded.values("body_sha256")[:1]),
        ).annotate(sync_stage=_sync_stage())
        if packages:
            annotated = annotated.with_offered_packages()
        if not dates:
            return annotated
        return annotated.annotate(last_published_at=Subquery(succeeded.values("finished_at")[:1]))

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
        # The ids read once and passed as one array: as a subquery, the caller's annotations would
        # be computed again.
        pks = list(self.values_list("pk", flat=True))
        own = {pk: [] for pk in pks} | _links(Integration.packages.through.objects.filter(
            integration_id__any_of=pks), "integration_id", "assessmentpackage_id")
        plans_of = _links(Integration.plans.through.objects.filter(integration_id__any_of=pks),
                          "integration_id", "plan_id")
        plan_packages = _links(Plan.packages.through.objects.filter(
            plan_id__in={p for plans in plans_of.values() for p in plans}), "plan_id", "assessmentpackage_id")
        # The ids already read above, not a subquery over the links: with thousands of
        # integrations PostgreSQL probes the links once per package for the whole id list
        # (0.4-0.7 s at 5,000 integrations; this way a few milliseconds).
        packages = AssessmentPackage.objects.filter(
            pk__in={p for linked in own.values() for p in linked} | {p for linked in plan_packages.values() for p in linked})
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
        _("Kombo integration id"),
        max_length=255,
        unique=True,
        validators=[integration_id_validator],
        help_text=_('As Kombo shows it: the ATS tool, a colon, an id ("recruitee:HWUTwvyx2wLoSUHphiWVrp28").'),
    )
    name = models.CharField(
        _("customer"), max_length=200, validators=[validate_single_line_text],
        help_text=_("The customer's name, as staff know it."),
    )
    region = models.CharField(
        max_length=2, choices=Region.choices, default=Region.EU,
        help_text=_("Where the customer's Kombo account lives: EU uses api.kombo.dev, US uses api.us.kombo.dev."),
    )
    is_active = models.BooleanField(
        _("active"), default=True,
        help_text=_("Paused integrations are not published, not even by bulk actions. An integration "
                  "with publications cannot be deleted (the ledger is kept): pause it instead."),
    )
    plans = models.ManyToManyField(
        Plan, blank=True, related_name="integrations",
        help_text=_("This customer offers every package of these plans, and the packages below."),
    )
    packages = models.ManyToManyField(
        AssessmentPackage, blank=True, related_name="integrations",
        verbose_name=_("packages for this customer alone"),
        help_text=_("Packages this customer can order besides those of its plans."),
    )
    created_by_webhook = models.BooleanField(
        _("created by webhook"), default=False, editable=False,
        help_text=_("Created by Kombo's integration-created webhook, not by staff."),
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
    def needs_manual_import(self):
        return is_manual_import_tool(self.kombo_integration_id)

    @property
    def sync_status(self):
        """selectors.sync_status_of: the one rule, for the list's column, its filter and the rest."""
        from .selectors import sync_status_of  # selectors reads these models

        if not hasattr(self, "latest_publication_status"):
            annotated = Integration.objects.with_sync_state(packages=False).get(pk=self.pk)
            self.latest_publication_status = annotated.latest_publication_status
            self.last_succeeded_sha256 = annotated.last_succeeded_sha256
            self.last_published_at = annotated.last_published_at
            self.sync_stage = annotated.sync_stage
        return sync_status_of(self)

    @property
    def sync_status_label(self):
        return SyncStatus(self.sync_status).label


class PlaceOfIntegrationField(models.CharField):
    """A copy of the integration's field `source`, taken when the row is created if not given:
    every way of creating a publication (save, bulk_create, planning's COPY) records where it goes."""

    def __init__(self, *args, source, **kwargs):
        self.source = source
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        return name, path, args, {**kwargs, "source": self.source}

    def pre_save(self, model_instance, add):
        value = getattr(model_instance, self.attname)
        if add and not value and model_instance.integration_id is not None:
            value = getattr(model_instance.integration, self.source)
            setattr(model_instance, self.attname, value)
        return value


# Publications whose list Kombo took: succeeded, or cancelled while in flight after Kombo had
# answered 2xx (its list is at Kombo all the same). What Kombo holds is the newest of them sent to
# the integration's current Kombo id and region (PublicationQuerySet.accepted).
ACCEPTED = Q(status="succeeded") | Q(status="cancelled", http_status__gte=200, http_status__lt=300)


class PublicationQuerySet(models.QuerySet):
    def at_place(self, *, kombo_integration_id, region):
        """Publications sent (or to be sent) to this Kombo integration id and region: values, or
        expressions such as OuterRef. A list published under another id or region is not there."""
        return self.filter(target_kombo_integration_id=kombo_integration_id, target_region=region)

    def at_place_of_outer(self):
        """at_place in a subquery over Integration (filtered on integration=OuterRef("pk")): the
        outer integration's current id and region, without a join."""
        return self.at_place(kombo_integration_id=OuterRef("kombo_integration_id"),
                             region=OuterRef("region"))

    def accepted_here(self):
        """Lists Kombo took, of publications already narrowed to one place (at_place)."""
        return self.filter(ACCEPTED)

    def accepted_of_outer(self):
        """In a subquery over Integration: the outer integration's accepted publications at its
        current Kombo id and region, newest first. The first is the baseline of every diff and of
        the sync status (one probe of publication_accepted_idx)."""
        return self.filter(integration=OuterRef("pk")).at_place_of_outer().accepted_here().order_by("-pk")

    def accepted(self):
        """Lists Kombo took at the Kombo id and region their integration has now: the newest is the
        baseline of every diff and of the sync status. After a move (a new id or region) there is
        none: the integration is "never published" there."""
        return self.at_place(kombo_integration_id=F("integration__kombo_integration_id"),
                             region=F("integration__region")).accepted_here()


class Publication(models.Model):
    """One request to publish one integration, and its whole story. Never edited by hand."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        SENDING = "sending", _("Sending")
        RETRYING = "retrying", _("Retrying")
        WAITING = "waiting", _("Waiting for the customer's first sync")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        SUPERSEDED = "superseded", _("Superseded by a newer publication")
        CANCELLED = "cancelled", _("Cancelled")

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
        related_name="+", help_text=_("Empty when started by a script."),
    )
    requested_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Where this list goes: the integration's Kombo id and region when the publication was created.
    # What was published counts for that place only (PublicationQuerySet.accepted).
    target_kombo_integration_id = PlaceOfIntegrationField(
        _("Kombo integration id"), max_length=255, editable=False, source="kombo_integration_id",
        help_text=_("The integration's Kombo id when this publication was created."))
    target_region = PlaceOfIntegrationField(
        _("region"), max_length=2, choices=Region.choices, editable=False, source="region",
        help_text=_("The integration's region when this publication was created."))
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    body = models.TextField(help_text=_("The exact bytes sent to Kombo (UTF-8 JSON), snapshotted at creation."))
    body_sha256 = models.CharField(_("body SHA-256"), max_length=64)
    package_count = models.PositiveIntegerField(default=0)
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text=_("When the task was last handed to the broker.")
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    response_body = models.TextField(blank=True)
    warnings = models.JSONField(default=list, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    error_title = models.CharField(max_length=500, blank=True)
    error_message = models.TextField(blank=True)
    error_log_url = models.URLField(_("Kombo log URL"), max_length=1000, blank=True)
    failure_reason = models.TextField(
        blank=True, help_text=_("Why the publication failed or is retrying, in plain words.")
    )
    rate_limit_headers = models.JSONField(
        default=dict, blank=True,
        help_text=_("ratelimit-* and Concurrency-* headers of the last response."),
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The token of the run that last took this publication (the integration's lease token while
    # that run holds it): every write after the take names it, so a run that lost its lease
    # cannot change the row.
    lease_token = models.CharField(max_length=32, blank=True, editable=False)
    cancel_requested_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text=_("Staff asked to cancel it, or paused the integration; one in flight ends as "
                  "cancelled when its request returns."),
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
            # The latest accepted one at the integration's current Kombo id and region (the
            # baseline of every diff), however many failed since or went elsewhere: one probe.
            models.Index(fields=["integration", "target_kombo_integration_id", "target_region", "-id"],
                         name="publication_accepted_idx", condition=ACCEPTED),
        ]

    def __str__(self):
        # The integration's name, not its database id: "Publication #4 of 1" reads as "4 of 1".
        return f"Publication #{self.pk} of {self.integration.name}"

    @property
    def is_final(self):
        return self.status in self.FINAL_STATUSES

    @property
    def was_accepted(self):
        """Kombo took this list (the Python side of ACCEPTED)."""
        return self.status == self.Status.SUCCEEDED or (
            self.status == self.Status.CANCELLED and self.http_status is not None
            and 200 <= self.http_status < 300)

    @property
    def needs_manual_import(self):
        """Kombo took the list, but the customer's ATS takes packages by hand: they must import it."""
        return self.was_accepted and is_manual_import_tool(self.target_kombo_integration_id)

    @property
    def tool(self):
        return integration_tool(self.target_kombo_integration_id)

    @property
    def tool_name(self):
        return tool_name(self.target_kombo_integration_id)

    def body_dict(self):
        return payloads.parse_body(self.body)


class PublicationAttempt(models.Model):
    """One HTTP request made for a publication (or one that could not be made)."""

    publication = models.ForeignKey(Publication, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    outcome = models.CharField(max_length=32, blank=True)
    message = models.TextField(blank=True)
    wait_seconds = models.FloatField(
        null=True, blank=True, help_text=_("How long the publication waited before its next attempt.")
    )

    class Meta:
        ordering = ["publication", "number"]
        constraints = [
            models.UniqueConstraint(fields=["publication", "number"], name="unique_attempt_number")
        ]


class CatalogueRevision(models.Model):
    """One row whose number grows with every write to the tables that make an integration's body
    (the packages, and the links of integrations and plans to packages and of integrations to
    plans; migration 0009 names them), in the writer's own
    transaction: database triggers do it (migration 0009), so no path (the admin, an import, a
    script, plain SQL) can change the catalogue without it. A value computed from the catalogue
    while the number read N is current as long as the number is still N."""

    number = models.BigIntegerField(default=0)


class IntegrationCatalogueHash(models.Model):
    """An integration's current body hash (Integration.current_sha256) as computed at a catalogue
    revision: what the sync-status filters of thousands of integrations read instead of building
    every body again. Worth nothing once the revision has moved on (selectors.current_hashes)."""

    integration = models.OneToOneField(Integration, on_delete=models.CASCADE, primary_key=True,
                                       related_name="+")
    sha256 = models.CharField(max_length=64)
    revision = models.BigIntegerField()


class WebhookEvent(models.Model):
    """One event Kombo posted to /webhooks/kombo/, stored once by its id, and what came of it.
    Written by packages_app.webhook_events only; never edited by hand."""

    class Outcome(models.TextChoices):
        RECEIVED = "received", _("Received, not processed yet")
        CREATED = "created", _("Integration created")
        PUBLISHED = "published", _("Publication queued")
        UNCHANGED = "unchanged", _("Nothing to do")
        PAUSED = "paused", _("Integration paused")
        IGNORED = "ignored", _("Ignored")
        FAILED = "failed", _("Failed")

    event_id = models.CharField(_("event id"), max_length=255, unique=True,
                                help_text=_("Kombo's id of the event: a redelivery carries the same one."))
    type = models.CharField(max_length=100, db_index=True)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    payload = models.JSONField(help_text=_("The event Kombo sent, parsed (its signature was checked over the raw bytes)."))
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RECEIVED,
                               db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    integration = models.ForeignKey(
        Integration, null=True, blank=True, on_delete=models.SET_NULL, related_name="webhook_events",
        help_text=_("The integration the event created or changed."),
    )
    detail = models.TextField(blank=True, help_text=_("What happened, in plain words."))
    error = models.TextField(blank=True, help_text=_("Why processing failed."))

    class Meta:
        ordering = ["-received_at", "-pk"]
        verbose_name = _("webhook event")

    def __str__(self):
        return f"{self.type} {self.event_id}"
