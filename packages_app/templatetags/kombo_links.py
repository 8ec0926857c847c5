"""`{{ url|kombo_link }}`: a link built from Kombo's answers, or nothing. Every such link in a
template goes through it (an upstream `javascript:` or plain-http URL must never be clickable)."""
from django import template

from ..kombo import is_safe_url

register = template.Library()


@register.filter
def kombo_link(url):
    return url if is_safe_url(url) else ""
