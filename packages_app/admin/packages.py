"""The catalogue: assessment packages, their import and export."""
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.translation import gettext, gettext_lazy as _, ngettext

from .. import catalogue_io
from ..forms import AssessmentPackageForm
from ..models import (
    AssessmentPackage,
    Plan,
)
from .catalogue_import import CatalogueImportMixin
from .mixins import ChangeHistoryWithValuesMixin, PackageDeletionMixin


@admin.register(AssessmentPackage)
class AssessmentPackageAdmin(PackageDeletionMixin, CatalogueImportMixin, ChangeHistoryWithValuesMixin,
                             admin.ModelAdmin):
    list_display = ("package_id", "name", "type", "offered_by", "updated_at")
    list_display_links = ("package_id", "name")
    list_filter = ("type",)
    search_fields = ("package_id", "name", "description")
    show_full_result_count = False
    readonly_fields = ("integrations_offering", "created_at", "updated_at")
    form = AssessmentPackageForm
    # confirm_id_change is a hidden field unless a save changes a published id (forms.py).
    fields = ("package_id", "confirm_id_change", "type", "name", "description", "integrations_offering",
              "created_at", "updated_at")
    change_form_template = "admin/packages_app/assessmentpackage/change_form.html"

    change_list_template = "admin/packages_app/assessmentpackage/change_list.html"

    def get_queryset(self, request):
        # Plans as a subquery, not a second join: one join already multiplies the rows it counts.
        plans = (Plan.packages.through.objects.filter(assessmentpackage_id=OuterRef("pk"))
                 .order_by().values("assessmentpackage_id").annotate(n=Count("*")).values("n"))
        return super().get_queryset(request).annotate(
            integration_count=Count("integrations"),
            plan_count=Coalesce(Subquery(plans, output_field=IntegerField()), 0),
        )

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if "name" in form.changed_data or not change:
            warning = form.name_warning()
            if warning:
                self.message_user(request, gettext("%(package)s: %(warning)s") % {
                    "package": obj, "warning": warning}, messages.WARNING)

    def get_urls(self):
        return [
            path("import/", self.admin_site.admin_view(self.import_view),
                 name="packages_app_assessmentpackage_import"),
            path("export/", self.admin_site.admin_view(self.export_view),
                 name="packages_app_assessmentpackage_export"),
        ] + super().get_urls()

    def has_import_permission(self, request):
        return self.has_add_permission(request) and self.has_change_permission(request)

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_import": self.has_import_permission(request)}
        return super().changelist_view(request, extra_context)

    def export_view(self, request):
        """The whole catalogue as JSON (Kombo's request shape) or CSV, as a download."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        fmt = request.GET.get("format", "json")
        if fmt not in ("json", "csv"):
            fmt = "json"
        content = catalogue_io.export_json() if fmt == "json" else catalogue_io.export_csv()
        content_type = "application/json" if fmt == "json" else "text/csv"
        response = HttpResponse(content, content_type=f"{content_type}; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="packages-{stamp}.{fmt}"'
        return response

    @admin.display(description=_("offered by"), ordering="integration_count")
    def offered_by(self, obj):
        count = obj.integration_count
        text = ngettext("%(count)d integration", "%(count)d integrations", count) % {"count": count}
        if obj.plan_count:
            text = gettext("%(integrations)s and %(plans)s") % {
                "integrations": text,
                "plans": ngettext("%(count)d plan", "%(count)d plans", obj.plan_count) % {"count": obj.plan_count}}
        return text

    @admin.display(description=_("offered by"))
    def integrations_offering(self, obj):
        if not obj.pk:
            return "—"
        integrations = obj.integrations.order_by("name")
        plans = obj.plans.order_by("name")
        if not integrations and not plans:
            return gettext("No integration or plan offers this package yet.")
        links = [(reverse("admin:packages_app_integration_change", args=[i.pk]), str(i)) for i in integrations]
        # Every integration on these plans offers it too.
        links += [(reverse("admin:packages_app_plan_change", args=[p.pk]), gettext("plan “%(name)s”") % {"name": p})
                  for p in plans]
        return format_html_join(", ", '<a href="{}">{}</a>', links)
