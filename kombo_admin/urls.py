"""Top-level URLs: the admin is the product."""
from django.conf import settings
from django.contrib import admin
from django.urls import path
from django.utils.translation import gettext_lazy as _
from django.views.generic import RedirectView

from packages_app.webhooks import kombo_webhook

from .health import health

admin.site.site_header = _("Kombo package publisher")
admin.site.site_title = _("Kombo package publisher")
admin.site.index_title = _("Catalogue and publishing")
# The lists are wide (sync status, last publish): give them the whole width.
admin.site.enable_nav_sidebar = False

urlpatterns = [
    path("health/", health, name="health"),
    path("webhooks/kombo/", kombo_webhook, name="kombo_webhook"),
    path(settings.ADMIN_URL, admin.site.urls),
    path("", RedirectView.as_view(url="/" + settings.ADMIN_URL, permanent=False)),
]
