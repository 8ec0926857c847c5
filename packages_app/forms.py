"""Forms of the admin's own pages, and the model forms whose save needs a confirmation first."""
import time

from django import forms
from django.conf import settings
from django.utils.text import format_lazy
from django.utils.translation import gettext, gettext_lazy as _, ngettext

from .kombo_readback import open_order_counts, readback_limit
from .models import PACKAGE_NAME_SHOWN_LENGTH, AssessmentPackage, Integration, package_name_warning
from .publishing.client import integration_base_url


class CatalogueImportForm(forms.Form):
    file = forms.FileField(label=_("File"),
                           help_text=_("JSON as Kombo receives it ({\"packages\": [...]}) or CSV with "
                                       "the columns id, type, name, description. UTF-8."))
    format = forms.ChoiceField(
        label=_("Format"),
        choices=[("", _("Detect from the file name")), ("json", "JSON"), ("csv", "CSV")], required=False
    )


# --- confirmations before a save that changes what Kombo holds -----------------------------------

def _names(integrations, limit=10):
    """"Acme (recruitee:1), Beta (workday:2) and 3 more"."""
    shown = ", ".join(str(i) for i in integrations[:limit])
    rest = len(integrations) - limit
    if rest > 0:
        shown += " " + ngettext("and %(count)d more", "and %(count)d more", rest) % {"count": rest}
    return shown


class _ConfirmingForm(forms.ModelForm):
    """A model form with a tick that appears (and is required) only when the save would change
    what Kombo holds; on a plain save it is a hidden field nobody sees."""

    confirm_field = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.confirmation_needed = None  # the warning, once clean() found one
        field = self.fields[self.confirm_field]
        field.required = False
        # Shown from the start once a save is asked and needs it: see clean().
        if not self._needs_tick_shown():
            field.widget = forms.HiddenInput()

    def _needs_tick_shown(self):
        return False

    def _require_tick(self, warning):
        self.confirmation_needed = warning
        if not self.cleaned_data.get(self.confirm_field):
            self.fields[self.confirm_field].widget = forms.CheckboxInput()
            self.add_error(self.confirm_field, warning)


class IntegrationForm(_ConfirmingForm):
    """The integration's change form: moving a published integration (a new Kombo id or region)
    asks for a tick first, since what was published counts only where it was published."""

    confirm_move = forms.BooleanField(
        label=_("Move it"), required=False,
        help_text=_("Tick to confirm: at its new Kombo id or region this integration is “never "
                    "published”, and its next publish sends its whole list there."),
    )
    confirm_field = "confirm_move"

    class Meta:
        model = Integration
        fields = "__all__"

    def _published_here(self):
        from .selectors import integration_has_been_published

        if not hasattr(self, "_published"):
            self._published = (self.instance.pk is not None
                               and integration_has_been_published(integration=self.instance))
        return self._published

    def _moving(self, kombo_integration_id, region):
        return (self.instance.pk is not None
                and (kombo_integration_id != self.instance.kombo_integration_id
                     or region != self.instance.region))

    def _needs_tick_shown(self):
        if not self.is_bound or self.instance.pk is None:
            return False
        raw_id = str(self.data.get(self.add_prefix("kombo_integration_id"), "")).strip()
        raw_region = str(self.data.get(self.add_prefix("region"), ""))
        return (self._moving(raw_id, raw_region) and self._published_here()
                and bool(self.data.get(self.add_prefix(self.confirm_field))))

    def move_warning(self):
        """What moving does, for the form's notice (before any change is typed)."""
        if self.instance.pk is None or not self._published_here():
            return None
        # The saved place (initial): after a refused save the instance holds what was typed.
        return gettext(
            "Published to Kombo as %(id)s in %(region)s. Changing the Kombo integration id or the "
            "region makes this integration “never published” at the new place: the next publish "
            "sends its whole list there, and the list already at %(id)s stays there as it is."
        ) % {"id": self.initial.get("kombo_integration_id"), "region": self.initial.get("region")}

    def clean(self):
        cleaned = super().clean()
        new_id, new_region = cleaned.get("kombo_integration_id"), cleaned.get("region")
        if new_id is None or new_region is None or not self._moving(new_id, new_region):
            return cleaned
        if self._published_here():
            self._require_tick(gettext(
                "%(name)s was published to Kombo as %(old_id)s (%(old_region)s). Saving it as "
                "%(new_id)s (%(new_region)s) makes it “never published” there: its next publish "
                "sends its whole list to the new place, publications on their way to the old one "
                "are cancelled, and the list at %(old_id)s is left as it is. Tick “Move it” to "
                "save.") % {
                "name": self.instance.name, "old_id": self.instance.kombo_integration_id,
                "old_region": self.instance.region, "new_id": new_id, "new_region": new_region})
        return cleaned


class AssessmentPackageForm(_ConfirmingForm):
    """The package's change form: a published id changed is a removal plus an addition at Kombo,
    so it names the integrations concerned and asks for a tick; a long name gets a warning."""

    confirm_id_change = forms.BooleanField(
        label=_("Change the published id"), required=False,
        help_text=_("Tick to confirm: on their next publish, the integrations named above lose the "
                    "package under its old id at Kombo and get it under the new one."),
    )
    confirm_field = "confirm_id_change"

    class Meta:
        model = AssessmentPackage
        fields = "__all__"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "name" in self.fields:
            self.fields["name"].widget.attrs.setdefault("data-shown-length", PACKAGE_NAME_SHOWN_LENGTH)
            self.fields["name"].help_text = format_lazy(
                "{} {}", self.fields["name"].help_text or "",
                _("ATSs usually show about %(shown)d characters of it.") % {"shown": PACKAGE_NAME_SHOWN_LENGTH},
            ).strip()

    def _needs_tick_shown(self):
        return bool(self.is_bound and self.instance.pk is not None
                    and self.data.get(self.add_prefix(self.confirm_field)))

    def name_warning(self):
        """A long name: a warning, never a refusal."""
        name = (self.cleaned_data.get("name") if hasattr(self, "cleaned_data")
                else self.initial.get("name"))
        return package_name_warning(name)

    def holding_integrations(self):
        """The integrations whose list at Kombo has this package under its saved id."""
        from .selectors import integrations_holding_package

        if not hasattr(self, "_holding"):
            self._holding = ([] if self.instance.pk is None else
                             integrations_holding_package(package=self.instance,
                                                          package_id=self.initial.get("package_id")))
        return self._holding

    def clean(self):
        cleaned = super().clean()
        old_id, new_id = self.initial.get("package_id"), cleaned.get("package_id")
        if self.instance.pk is None or not new_id or new_id == old_id:
            return cleaned
        holding = self.holding_integrations()
        if holding and not cleaned.get(self.confirm_field):
            orders = _open_orders_text(holding, old_id)
            self._require_tick(" ".join(filter(None, [ngettext(
                "“%(old)s” is published to %(count)d integration: %(names)s. Changing the id to "
                "“%(new)s” is a removal plus an addition at Kombo: its next publish deletes "
                "“%(old)s” there (orders in progress may refer to it) and adds “%(new)s”. Tick "
                "“Change the published id” to save.",
                "“%(old)s” is published to %(count)d integrations: %(names)s. Changing the id to "
                "“%(new)s” is a removal plus an addition at Kombo: their next publish deletes "
                "“%(old)s” there (orders in progress may refer to it) and adds “%(new)s”. Tick "
                "“Change the published id” to save.",
                len(holding)) % {"old": old_id, "new": new_id, "count": len(holding),
                                 "names": _names(holding)}, orders])))
        elif holding:
            self.confirmation_needed = True
        return cleaned


def _open_orders_text(integrations, package_id):
    """What Kombo says of the OPEN orders for `package_id` on these integrations (read with the
    confirmation page's reader, up to its number of integrations and within its time budget), in
    one sentence; every integration that could not be read is said so."""
    limit, budget = readback_limit(), settings.KOMBO_READBACK_BUDGET_SECONDS
    deadline = time.monotonic() + budget
    with_orders, unread = [], []
    for integration in integrations[:limit]:
        remaining = deadline - time.monotonic()
        if remaining <= 0.1:
            unread.append(str(integration))
            continue
        counts, error = open_order_counts(integration_id=integration.kombo_integration_id,
                                          base_url=integration_base_url(integration),
                                          budget_seconds=remaining)
        if error is not None:
            unread.append(f"{integration} ({error})")
        elif counts.get(package_id):
            with_orders.append(ngettext("%(integration)s has %(count)d open order",
                                        "%(integration)s has %(count)d open orders",
                                        counts[package_id]) % {"integration": integration,
                                                               "count": counts[package_id]})
    parts = []
    if with_orders:
        parts.append(gettext("Open orders for “%(id)s” at Kombo: %(orders)s.") % {
            "id": package_id, "orders": "; ".join(with_orders)})
    elif len(unread) < len(integrations):
        parts.append(gettext("Kombo has no open orders for “%(id)s” on the integrations read.") % {"id": package_id})
    if unread:
        parts.append(gettext("Open orders could not be read for: %(names)s.") % {"names": "; ".join(unread)})
    skipped = len(integrations) - limit
    if skipped > 0:
        parts.append(ngettext("Orders were not read for %(count)d more integration (more than %(limit)d).",
                              "Orders were not read for %(count)d more integrations (more than %(limit)d).",
                              skipped) % {"count": skipped, "limit": limit})
    return " ".join(parts)
