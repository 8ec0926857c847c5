from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class PackagesAppConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "packages_app"
    verbose_name = _("Kombo publishing")

    def ready(self):
        from . import lookups  # noqa: F401  registers field__any_of
