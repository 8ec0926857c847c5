"""The packages list's Import: upload, then a preview of what the file adds and changes, then the
import on confirm. Nothing is written before the confirm, and the confirm imports exactly the
previewed file (kept in the staff member's session, by a random id)."""
import base64
import secrets
import time
import zlib

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _

from .. import catalogue_io
from ..forms import CatalogueImportForm
from ..models import AssessmentPackage

SESSION_KEY = "kombo_import_preview"
PREVIEW_MAX_AGE_SECONDS = 3600
FIELDS = ("type", "name", "description")


class _Rollback(Exception):
    pass


def import_dry_run(*, data, filename, fmt, user):
    """What importing the file would do, without writing anything: the import runs in a
    transaction that is rolled back. (result, {package id: (type, name, description)} after)."""
    try:
        with transaction.atomic():
            result = catalogue_io.catalogue_import(data=data, filename=filename, fmt=fmt, user=user,
                                                   via=f"import of {filename}")
            after = {p.package_id: tuple(getattr(p, f) for f in FIELDS) for p in
                     AssessmentPackage.objects.filter(package_id__in=result.added + result.updated)}
            raise _Rollback
    except _Rollback:
        pass
    return result, after


def preview_rows(result, after):
    """([(id, type, name)] added, [(id, [(field, old, new)])] changed) for the preview page."""
    before = {p.package_id: tuple(getattr(p, f) for f in FIELDS)
              for p in AssessmentPackage.objects.filter(package_id__in=result.updated)}
    added = [(pid, *after[pid][:2]) for pid in result.added if pid in after]
    changed = []
    for pid in result.updated:
        old, new = before.get(pid), after.get(pid)
        if old and new:
            changed.append((pid, new[1], [(f, o, n) for f, o, n in zip(FIELDS, old, new) if o != n]))
    return added, changed


class CatalogueImportMixin:
    """For AssessmentPackageAdmin: the import view (admin:packages_app_assessmentpackage_import)."""

    import_template = "admin/packages_app/assessmentpackage/import.html"

    def import_view(self, request):
        """GET: the form. POST a file: check every row, then show what it would add and change.
        POST confirm: import the previewed file; one bad row, nothing written."""
        if not self.has_import_permission(request):
            raise PermissionDenied
        if request.method == "POST" and "confirm" in request.POST:
            return self._import_confirmed(request)
        form = CatalogueImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            data = upload.read()
            fmt = form.cleaned_data["format"] or None
            try:
                result, after = import_dry_run(data=data, filename=upload.name, fmt=fmt, user=request.user)
            except catalogue_io.ImportFormatError as exc:
                form.add_error("file", str(exc))
            else:
                if result.ok:
                    token = self._store(request, data=data, filename=upload.name, fmt=fmt, result=result)
                    return self._preview_page(request, form, result, after, token, upload.name)
                return self._page(request, form, result=result)
        return self._page(request, form)

    def _import_confirmed(self, request):
        stored = request.session.get(SESSION_KEY) or {}
        if (not stored or stored.get("token") != request.POST.get("confirm")
                or stored.get("at", 0) < time.time() - PREVIEW_MAX_AGE_SECONDS):
            self.message_user(request, _("This import preview is no longer available: nothing was imported. "
                                         "Choose the file again."), messages.WARNING)
            return HttpResponseRedirect(reverse("admin:packages_app_assessmentpackage_import"))
        data = zlib.decompress(base64.b64decode(stored["data"]))
        filename, fmt = stored["filename"], stored["fmt"]
        with transaction.atomic():
            result = catalogue_io.catalogue_import(data=data, filename=filename, fmt=fmt, user=request.user,
                                                   via=f"import of {filename}")
            if result.ok and (result.added, result.updated) == (stored["added"], stored["updated"]):
                del request.session[SESSION_KEY]
                self.message_user(request, _("Imported %(file)s: %(summary)s") % {
                    "file": filename, "summary": result.summary()}, messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:packages_app_assessmentpackage_changelist"))
            transaction.set_rollback(True)
        # The catalogue changed since the preview: nothing written, the new preview instead.
        result, after = import_dry_run(data=data, filename=filename, fmt=fmt, user=request.user)
        form = CatalogueImportForm()
        if not result.ok:
            return self._page(request, form, result=result)
        token = self._store(request, data=data, filename=filename, fmt=fmt, result=result)
        notice = _("The catalogue changed since the preview: nothing was imported. This is what the file "
                   "would do now.")
        return self._preview_page(request, form, result, after, token, filename, notice=notice)

    @staticmethod
    def _store(request, *, data, filename, fmt, result):
        token = secrets.token_urlsafe(16)
        request.session[SESSION_KEY] = {
            "token": token, "filename": filename, "fmt": fmt, "at": time.time(),
            "data": base64.b64encode(zlib.compress(data)).decode("ascii"),
            "added": result.added, "updated": result.updated,
        }
        return token

    def _page(self, request, form, **context):
        return TemplateResponse(request, self.import_template, {
            **self.admin_site.each_context(request),
            "title": _("Import packages"),
            "opts": self.model._meta,
            "form": form,
            "errors_in_form": bool(form.errors),
            **context,
        })

    def _preview_page(self, request, form, result, after, token, filename, notice=""):
        added, changed = preview_rows(result, after)
        return self._page(request, form, preview=True, result=result, added=added, changed=changed,
                          token=token, filename=filename, notice=notice,
                          nothing_to_do=not (result.added or result.updated or result.plans_added
                                             or result.plans_updated))
