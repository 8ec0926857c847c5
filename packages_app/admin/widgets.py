"""Django's autocomplete, safe to show again after a refused form."""
from django.contrib.admin.widgets import AutocompleteSelectMultiple

BIGINT_MAX = 2 ** 63 - 1


def is_db_id(value):
    """Whether `value` (a form or query-string value) can be a primary key: digits, within bigint.
    Anything else would make the database refuse the query ("1e3", a forged post, 2**64)."""
    text = str(value)
    return text.isascii() and text.isdigit() and int(text) <= BIGINT_MAX


class SafeAutocompleteSelectMultiple(AutocompleteSelectMultiple):
    """Re-shown with values that are not ids (a forged post, "1e3", a number past bigint), Django's
    widget would query them and crash the page; they are left out of the rendering instead (the
    form has already refused them)."""

    def optgroups(self, name, value, attr=None):
        ids = [v for v in value if is_db_id(v)]
        return super().optgroups(name, ids, attr)


class SafeAutocompleteMixin:
    """ModelAdmin mixin: many-to-many autocomplete fields use SafeAutocompleteSelectMultiple."""

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if "widget" not in kwargs and db_field.name in self.get_autocomplete_fields(request):
            kwargs["widget"] = SafeAutocompleteSelectMultiple(db_field, self.admin_site,
                                                              using=kwargs.get("using"))
        return super().formfield_for_manytomany(db_field, request, **kwargs)
