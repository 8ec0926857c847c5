"""Who changed what and when, outside the admin's own forms (imports, commands): entries in
Django's admin log, so they show on each object's History page next to the admin's own."""
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth import get_user_model

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


def describe_changes(changes):
    """'name: "Old" → "New"; type: "A" → "B"' for a {field: (old, new)} dict."""
    def short(value):
        text = str(value)
        return text if len(text) <= 120 else text[:117] + "…"

    return "; ".join(f'{field}: "{short(old)}" → "{short(new)}"' for field, (old, new) in changes.items())


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

