"""`{{ value|when }}`: a date and time as staff read them everywhere, including the ISO 8601
strings Kombo sends; `{{ timedelta|duration }}`: "15 minutes"; `{% site_header %}`: the admin's
header on pages rendered outside the admin (the lockout page)."""
from django import template

from ..admin.display import duration_text
from ..admin.display import when as when_text

register = template.Library()


@register.filter
def when(value):
    return when_text(value)


@register.filter
def duration(value):
    return duration_text(value) if hasattr(value, "total_seconds") else value


@register.simple_tag
def site_header():
    from django.contrib import admin

    return admin.site.site_header


@register.simple_tag
def site_title():
    from django.contrib import admin

    return admin.site.site_title
