"""Each publication records where it went (the integration's Kombo id and region, backfilled from
the integration for existing rows), the baseline index covers them, and package ids get their rule
and a uniqueness that ignores case (refused, naming the clashes, if existing ids already clash)."""
import django.db.models.functions.text
from django.db import migrations, models

import packages_app.models


def refuse_ids_that_differ_only_in_case(apps, schema_editor):
    AssessmentPackage = apps.get_model("packages_app", "AssessmentPackage")
    groups = {}
    for pk, package_id, name in AssessmentPackage.objects.order_by("package_id").values_list(
            "pk", "package_id", "name"):
        groups.setdefault(package_id.lower(), []).append(f"{package_id!r} ({name}, pk {pk})")
    clashes = [" = ".join(group) for group in groups.values() if len(group) > 1]
    if clashes:
        raise RuntimeError(
            "Package ids must now be unique regardless of case, but these packages share an id "
            "in different cases:\n  " + "\n  ".join(clashes[:50])
            + (f"\n  ... and {len(clashes) - 50} more" if len(clashes) > 50 else "")
            + "\nChange the id of all but one of each group (in the admin, before upgrading; a "
              "published id is removed at Kombo and added again on the next publish), then run "
              "the migration again. Nothing was changed.")


def backfill_place(apps, schema_editor):
    """Existing publications went to their integration's current id and region: nothing else
    was recorded, and that is the baseline the sync status showed until now."""
    Publication = apps.get_model("packages_app", "Publication")
    Integration = apps.get_model("packages_app", "Integration")
    quote = schema_editor.quote_name
    publication, integration = quote(Publication._meta.db_table), quote(Integration._meta.db_table)
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"UPDATE {publication} AS p SET target_kombo_integration_id = i.kombo_integration_id, "
            f"target_region = i.region FROM {integration} AS i WHERE i.id = p.integration_id")
        return
    schema_editor.execute(
        f"UPDATE {publication} SET "
        f"target_kombo_integration_id = (SELECT i.kombo_integration_id FROM {integration} i "
        f"WHERE i.id = {publication}.integration_id), "
        f"target_region = (SELECT i.region FROM {integration} i WHERE i.id = {publication}.integration_id)")


class Migration(migrations.Migration):

    dependencies = [
        ('packages_app', '0007_plans_and_webhook_events'),
    ]

    operations = [
        migrations.RunPython(refuse_ids_that_differ_only_in_case, migrations.RunPython.noop, elidable=True),
        migrations.AddField(
            model_name='publication',
            name='target_kombo_integration_id',
            field=packages_app.models.PlaceOfIntegrationField(default='', editable=False, source='kombo_integration_id', help_text="The integration's Kombo id when this publication was created.", max_length=255, verbose_name='Kombo integration id'),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name='publication',
            name='target_region',
            field=packages_app.models.PlaceOfIntegrationField(choices=[('EU', 'EU'), ('US', 'US')], default='', editable=False, source='region', help_text="The integration's region when this publication was created.", max_length=2, verbose_name='region'),
            preserve_default=False,
        ),
        migrations.RunPython(backfill_place, migrations.RunPython.noop, elidable=True),
        migrations.RemoveIndex(
            model_name='publication',
            name='publication_accepted_idx',
        ),
        migrations.AddIndex(
            model_name='publication',
            index=models.Index(condition=models.Q(('status', 'succeeded'), models.Q(('http_status__gte', 200), ('http_status__lt', 300), ('status', 'cancelled')), _connector='OR'), fields=['integration', 'target_kombo_integration_id', 'target_region', '-id'], name='publication_accepted_idx'),
        ),
        migrations.AlterField(
            model_name='assessmentpackage',
            name='package_id',
            field=models.CharField(help_text='The id Kombo receives. Letters (A–Z, a–z), digits, and _ - . : only, starting with a letter or digit; no spaces. Unique regardless of case. Stable: never reuse it for another package; changing it once published removes the package at Kombo and adds a new one.', max_length=100, unique=True, validators=[packages_app.models.validate_package_id], verbose_name='package id'),
        ),
        migrations.AddConstraint(
            model_name='assessmentpackage',
            constraint=models.UniqueConstraint(django.db.models.functions.text.Lower('package_id'), name='package_id_unique_ignoring_case'),
        ),
    ]
