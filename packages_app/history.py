"""Who changed what and when, outside the admin's own forms (imports, commands): entries in
Django's admin log, so they show on each object's History page next to the admin's own."""
from dataclasses import dataclass, field

from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.utils.translation import gettext as _

AUTOMATION_USERNAME = "automation"


def actor(user):
    """The user to credit: the person, or an inactive 'automation' user for scripts."""
    if user is not None and user.is_authenticated:
        return user
    User = get_user_model()
    automation, created = User.objects.get_or_create(
        username=AUTOMATION_USERNAME, defaults={"is_active": False}
    )
    if created:
        automation.set_unusable_password()
        automation.save(update_fields=["password"])
    return automation


@dataclass
class SetChange:
    """A change to a set (an integration's packages, a plan's): what came in, what went out."""

    added: list = field(default_factory=list)
    removed: list = field(default_factory=list)

    def __str__(self):
        parts = []
        if self.added:
            parts.append(_("added %(items)s") % {"items": ", ".join(map(str, self.added))})
        if self.removed:
            parts.append(_("removed %(items)s") % {"items": ", ".join(map(str, self.removed))})
        return ", ".join(parts) or _("unchanged")


def describe_changes(changes):
    """'name: "Old" → "New"; packages: added a, b, removed c' for a {field: (old, new) or
    SetChange} dict."""
    def short(value):
        text = str(value)
        return text if len(text) <= 120 else text[:117] + "…"

    return "; ".join(f"{name}: {change}" if isinstance(change, SetChange)
                     else f'{name}: "{short(change[0])}" → "{short(change[1])}"'
                     for name, change in changes.items())


def _log(*, user, obj, action_flag, message):
    LogEntry.objects.log_actions(
        user_id=actor(user).pk,
        queryset=[obj],
        action_flag=action_flag,
        change_message=message,
        single_object=True,
    )


def record_addition(*, user, obj, via):
    _log(user=user, obj=obj, action_flag=ADDITION, message=f"Added by {via}.")


def record_change(*, user, obj, changes, via):
    _log(user=user, obj=obj, action_flag=CHANGE, message=f"Changed by {via}: {describe_changes(changes)}.")


def record_removal(*, user, objs, message):
    """One History entry on each of `objs` (integrations, plans) for something taken from them,
    as a package deleted from the catalogue: written together, however many they are."""
    if not objs:
        return
    LogEntry.objects.log_actions(user_id=actor(user).pk, queryset=objs, action_flag=CHANGE,
                                 change_message=message)
