"""ModelAdmin mixins: change history that records the values, and read-only ledgers."""

from .. import history


class ChangeHistoryWithValuesMixin:
    """The History page says what changed, old and new, not only which fields."""

    def construct_change_message(self, request, form, formsets, add=False):
        if add or not form.changed_data:
            return super().construct_change_message(request, form, formsets, add)
        changes = {}
        for name in form.changed_data:
            old, new = form.initial.get(name), form.cleaned_data.get(name)
            if hasattr(new, "all") or isinstance(old, (list, tuple)):
                before = {str(getattr(o, "package_id", o)) for o in (old or [])}
                after = {str(getattr(o, "package_id", o)) for o in (new.all() if hasattr(new, "all") else new or [])}
                added, removed = sorted(after - before), sorted(before - after)
                changes[name] = (
                    "removed " + ", ".join(removed) if removed else "",
                    "added " + ", ".join(added) if added else "",
                )
                continue
            changes[name] = (old if old is not None else "", new if new is not None else "")
        return f"Changed in the admin: {history.describe_changes(changes)}."


# --- catalogue ------------------------------------------------------------------------------


class ReadOnlyAdminMixin:
    """A ledger: rows are written by the engine only, never added, edited or deleted by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
