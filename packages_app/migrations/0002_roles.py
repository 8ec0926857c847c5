"""Staff roles as groups: Viewer reads everything, Editor edits the catalogue and integrations,
Publisher is an Editor who may also publish to Kombo."""
from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW = [
    "view_assessmentpackage", "view_integration", "view_publication", "view_publicationattempt",
]
EDIT = VIEW + [
    "add_assessmentpackage", "change_assessmentpackage", "delete_assessmentpackage",
    "add_integration", "change_integration", "delete_integration",
]
ROLES = {
    "Viewer": VIEW,
    "Editor": EDIT,
    "Publisher": EDIT + ["publish_integration"],
}


def create_roles(apps, schema_editor):
    # Permissions are normally created after migrations; make sure they exist now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        permissions = list(Permission.objects.filter(
            content_type__app_label="packages_app", codename__in=codenames
        ))
        missing = set(codenames) - {p.codename for p in permissions}
        if missing:
            raise RuntimeError(f"Permissions missing for role {name}: {sorted(missing)}")
        group.permissions.set(permissions)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("packages_app", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
