"""The catalogue revision: a number every write to the catalogue's tables increases, by triggers,
in the writer's transaction (see models.CatalogueRevision), and the cache of integrations' current
body hashes it validates. The bump is an upsert, so a flush that emptied the revision table does
not stop it; a revision row made again from nothing empties the stored hashes."""
import django.db.models.deletion
from django.db import migrations, models

# The tables whose writes can change the body the catalogue gives an integration.
TABLES = ("packages_app_assessmentpackage", "packages_app_integration_packages",
          "packages_app_integration_plans", "packages_app_plan_packages")
BUMP = ("INSERT INTO packages_app_cataloguerevision (id, number) VALUES (1, 1) "
        "ON CONFLICT (id) DO UPDATE SET number = packages_app_cataloguerevision.number + 1; "
        # A revision row made again from nothing starts at 1: hashes stored under an earlier 1
        # must not pass for current.
        "DELETE FROM packages_app_integrationcataloguehash "
        "WHERE (SELECT number FROM packages_app_cataloguerevision WHERE id = 1) = 1")


def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        # Once per statement, BEFORE it touches a row: every catalogue writer takes the revision
        # row's lock first, so two of them cannot deadlock over it and the rows they write.
        schema_editor.execute(
            "CREATE OR REPLACE FUNCTION packages_app_catalogue_revision_bump() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN {BUMP}; RETURN NULL; END $$")
        for table in TABLES:
            schema_editor.execute(
                f"CREATE TRIGGER packages_app_catalogue_revision BEFORE INSERT OR UPDATE OR DELETE "
                f"OR TRUNCATE ON {table} FOR EACH STATEMENT "
                "EXECUTE FUNCTION packages_app_catalogue_revision_bump()")
    elif vendor == "sqlite":
        # SQLite has row triggers only (and one writer at a time).
        for table in TABLES:
            for event in ("INSERT", "UPDATE", "DELETE"):
                schema_editor.execute(
                    f"CREATE TRIGGER {table}_catalogue_revision_{event.lower()} BEFORE {event} ON {table} "
                    f"BEGIN {BUMP}; END")
    else:
        raise RuntimeError(f"No catalogue revision triggers for {vendor}: add them to this migration.")
    for statement in BUMP.split("; "):
        schema_editor.execute(statement)


def drop_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for table in TABLES:
        if vendor == "postgresql":
            schema_editor.execute(f"DROP TRIGGER IF EXISTS packages_app_catalogue_revision ON {table}")
        else:
            for event in ("insert", "update", "delete"):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_catalogue_revision_{event}")
    if vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS packages_app_catalogue_revision_bump()")


class Migration(migrations.Migration):

    dependencies = [
        ('packages_app', '0008_publication_place_and_package_id_rules'),
    ]

    operations = [
        migrations.CreateModel(
            name='CatalogueRevision',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('number', models.BigIntegerField(default=0)),
            ],
        ),
        migrations.CreateModel(
            name='IntegrationCatalogueHash',
            fields=[
                ('integration', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='+', serialize=False, to='packages_app.integration')),
                ('sha256', models.CharField(max_length=64)),
                ('revision', models.BigIntegerField()),
            ],
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
