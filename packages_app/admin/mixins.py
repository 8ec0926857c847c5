"""ModelAdmin mixins: change history that records the values, deletions staff can read (of a
package: who loses it; of a published integration: why not, and what to do instead), and
read-only ledgers."""
from django.contrib import messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.db.models import Count, Prefetch, prefetch_related_objects
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from .. import history
from ..models import Integration, Plan, Publication
from .display import PUBLISH_PERMISSION

# A deletion page names this many integrations per package, then counts the rest.
NAMED_UP_TO = 50


class ChangeHistoryWithValuesMixin:
    """The History page says what changed, old and new, not only which fields; for a set of
    packages or plans, which were added and which removed."""

    def construct_change_message(self, request, form, formsets, add=False):
        if add or not form.changed_data:
            return super().construct_change_message(request, form, formsets, add)
        changes = {}
        for name in form.changed_data:
            old, new = form.initial.get(name), form.cleaned_data.get(name)
            if hasattr(new, "all") or isinstance(old, (list, tuple)):
                before = {_label(o) for o in (old or [])}
                after = {_label(o) for o in (new.all() if hasattr(new, "all") else new or [])}
                changes[name] = history.SetChange(added=sorted(after - before), removed=sorted(before - after))
                continue
            changes[name] = (old if old is not None else "", new if new is not None else "")
        return _("Changed in the admin: %(changes)s.") % {"changes": history.describe_changes(changes)}


def _label(obj):
    """A package by its id (what Kombo sees), anything else by its name."""
    return str(getattr(obj, "package_id", None) or getattr(obj, "name", None) or obj)


# --- deleting packages: the customers who lose them --------------------------------------------


def _with_holders(packages):
    """The packages, each with the integrations and plans that offer it (by name), in two queries
    however many packages are deleted."""
    packages = list(packages)
    prefetch_related_objects(
        packages,
        Prefetch("integrations", queryset=Integration.objects.order_by("name").only("pk", "name", "kombo_integration_id")),
        Prefetch("plans", queryset=Plan.objects.order_by("name").only("pk", "name")))
    return packages


class PackageDeletionMixin:
    """Deleting packages: the confirmation names the integrations (customers) and plans that
    offer them, not "Integration_packages object (4)", and each of those integrations' and
    plans' History records the removal."""

    def get_deleted_objects(self, objs, request):
        deletable, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        packages = _with_holders(objs)
        links = {}  # the packages' own links, as Django made them (first item of each entry)
        for entry in deletable:
            if not isinstance(entry, list):
                links.setdefault(len(links), entry)
        to_delete, integration_total, plan_total = [], 0, 0
        for index, package in enumerate(packages):
            integrations, plans = list(package.integrations.all()), list(package.plans.all())
            integration_total += len(integrations)
            plan_total += len(plans)
            items = [format_html(
                '{} <a href="{}">{}</a> {}', _("No longer offered to"),
                reverse("admin:packages_app_integration_change", args=[i.pk]), i.name,
                _("(Kombo marks it deleted at its next publish)")) for i in integrations[:NAMED_UP_TO]]
            if len(integrations) > NAMED_UP_TO:
                rest = len(integrations) - NAMED_UP_TO
                items.append(ngettext("and %(count)d other integration", "and %(count)d other integrations",
                                      rest) % {"count": rest})
            items += [format_html('{} <a href="{}">{}</a>', _("Taken out of the plan"),
                                  reverse("admin:packages_app_plan_change", args=[p.pk]), p.name) for p in plans]
            to_delete += [links.get(index, str(package)), items] if items else [links.get(index, str(package))]
        through = {self.model.integrations.through._meta.verbose_name_plural,
                   self.model.plans.through._meta.verbose_name_plural}
        model_count = {name: count for name, count in model_count.items() if name not in through}
        if integration_total:
            model_count[_("integrations losing them")] = integration_total
        if plan_total:
            model_count[_("plans losing them")] = plan_total
        return to_delete, model_count, perms_needed, protected

    def _record_removals(self, request, packages):
        for package in _with_holders(packages):
            integrations = list(package.integrations.all())
            plans = list(package.plans.all())
            message = _("Package %(package)s removed: it was deleted from the catalogue.") % {
                "package": f"{package.name} ({package.package_id})"}
            history.record_removal(user=request.user, objs=integrations + plans, message=message)

    def delete_model(self, request, obj):
        self._record_removals(request, [obj])
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        self._record_removals(request, list(queryset))
        super().delete_queryset(request, queryset)


# --- deleting integrations: the ledger keeps them -----------------------------------------------


class PublishedIntegrationDeletionMixin:
    """An integration that has publications cannot be deleted (the ledger keeps them). Instead of
    Django's "your account doesn't have permission", staff read why, and are offered to pause it."""

    cannot_delete_template = "admin/packages_app/integration/cannot_delete.html"

    @staticmethod
    def _publication_counts(integrations):
        """{integration id: its publications} of those published, in one query however many."""
        return dict(Publication.objects.filter(integration__in=[i.pk for i in integrations]).order_by()
                    .values("integration_id").annotate(n=Count("pk")).values_list("integration_id", "n"))

    def _published(self, integrations):
        counts = self._publication_counts(integrations)
        return [i for i in integrations if i.pk in counts]

    def _cannot_delete(self, request, published, selected, status=200):
        counts = self._publication_counts(published)
        context = {
            **self.admin_site.each_context(request),
            "title": ngettext("Cannot delete this integration", "Cannot delete these integrations",
                              len(published)),
            "opts": self.model._meta,
            "published": [(i, counts[i.pk]) for i in published],
            "selected": selected,
            "single": len(selected) == 1,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "can_pause": self.has_change_permission(request),
            "back_url": (reverse("admin:packages_app_integration_change", args=[selected[0].pk])
                         if len(selected) == 1 else reverse("admin:packages_app_integration_changelist")),
        }
        return TemplateResponse(request, self.cannot_delete_template, context, status=status)

    def delete_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, unquote(object_id)) if str(object_id).isdigit() else None
        if obj is not None and self.has_view_or_change_permission(request, obj) \
                and super().has_delete_permission(request) and self._published([obj]):
            # Still a refusal (403), but one that says why and what to do instead.
            return self._cannot_delete(request, [obj], [obj], status=403)
        return super().delete_view(request, object_id, extra_context)

    def get_actions(self, request):
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            func, name, description = actions["delete_selected"]
            actions["delete_selected"] = (self._delete_selected_unless_published, name, description)
        return actions

    @staticmethod
    def _delete_selected_unless_published(modeladmin, request, queryset):
        from django.contrib.admin.actions import delete_selected

        selected = list(queryset.order_by("name"))
        published = modeladmin._published(selected)
        if published:
            if request.POST.get("post"):
                modeladmin.message_user(request, _("Nothing was deleted: integrations that have been "
                                                   "published are paused, never deleted."), messages.ERROR)
                return None
            return modeladmin._cannot_delete(request, published, selected)
        return delete_selected(modeladmin, request, queryset)


# --- read-only ledgers ----------------------------------------------------------------------


class ReadOnlyAdminMixin:
    """A ledger: rows are written by the engine only, never added, edited or deleted by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class PublishPermissionMixin:
    """Admin actions marked `permissions=["publish"]` (publishing, cancelling) need
    packages_app.publish_integration."""

    def has_publish_permission(self, request):
        return request.user.has_perm(PUBLISH_PERMISSION)
