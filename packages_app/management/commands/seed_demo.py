"""A demo dataset at the users' scale, for trying the admin: a catalogue, integrations and years of
publishing history (publications and their attempts). Loaded in bulk; never calls Kombo or the broker."""
import json
import random
import string
import time
from datetime import datetime, timezone
from types import SimpleNamespace

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.core.management.color import no_style
from django.db import connection, transaction

from packages_app import kombo, payloads
from packages_app.models import (AssessmentPackage, Integration, PackageType, Publication,
                                 PublicationAttempt, integration_id_validator,
                                 validate_description, validate_single_line_text)
from packages_app.publishing import outcomes, transitions

Status = Publication.Status
Membership = Integration.packages.through

DEFAULTS = {  # (PostgreSQL, SQLite): SQLite stores every body uncompressed, so it gets less.
    "integrations": (5000, 500),
    "packages": (500, 200),
    "packages_per_integration": (50, 30),
    "publications": (1_000_000, 20_000),
}
DAY = 86400.0
SPARE = 3 * 3600.0  # no request in the last hours of the history: every story has ended by then
# Sync state of each integration at the end of the history (shares; at least one of each when
# there are enough integrations). Nothing ends active: a queued row would be sent by the sweep.
BUCKETS = (("in_sync", 0.83), ("changed", 0.10), ("failed", 0.05), ("never", 0.02))
PAUSED_SHARE = 0.03
SCRIPT_SHARE = 0.25  # publications started by cron or a script (no requested_by)
# What happened to a publication that is not an integration's last one.
STORIES = (
    ("ok", 0.930), ("retried", 0.035), ("failed", 0.011), ("failed_no_retry", 0.003),
    ("gave_up", 0.002), ("superseded", 0.012), ("superseded_retrying", 0.003),
    ("cancelled", 0.003), ("cancelled_in_flight", 0.001),
)
LONG_STORIES = {"retried", "gave_up", "sync_wait"}  # these need hours before the next request


class Command(BaseCommand):
    help = (
        "Fill an empty database with a realistic demo dataset: packages, integrations offering them, "
        "and years of publication history with their attempts (mostly succeeded, some retried, "
        "failed, superseded or cancelled; the latest publication of most integrations in sync). "
        "PostgreSQL loads it with COPY (the defaults, about 1,000,000 publications, take a few "
        "minutes); SQLite uses batched inserts and smaller defaults (500 integrations, 200 packages, "
        "30 per integration, 20,000 publications). Refuses to run (exit status 1) if the database "
        "already has packages, integrations or publications, unless --flush. Never calls Kombo."
    )

    def add_arguments(self, parser):
        size = "default {} (SQLite: {})"
        parser.add_argument("--integrations", type=int, metavar="N",
                            help="Integrations; " + size.format(*DEFAULTS["integrations"]) + ".")
        parser.add_argument("--packages", type=int, metavar="N",
                            help="Packages in the catalogue; " + size.format(*DEFAULTS["packages"]) + ".")
        parser.add_argument("--packages-per-integration", type=int, metavar="N",
                            help="Packages each integration offers; "
                                 + size.format(*DEFAULTS["packages_per_integration"]) + ".")
        parser.add_argument("--publications", type=int, metavar="N",
                            help="Publications in the history, over all integrations; "
                                 + size.format(*DEFAULTS["publications"]) + ".")
        parser.add_argument("--years", type=float, default=3.0,
                            help="Length of the history, ending at the start of today (UTC); default 3.")
        parser.add_argument("--seed", type=int, default=1,
                            help="Random seed: the same seed and sizes give the same rows (default 1).")
        parser.add_argument("--flush", action="store_true",
                            help="First delete every package, integration, publication and attempt "
                                 "(links to them go too; other rows that may point at them, such as "
                                 "webhook events, lose the reference).")

    def handle(self, *args, **options):
        postgres = connection.vendor == "postgresql"
        sizes = {name: options[name] if options[name] is not None else defaults[0 if postgres else 1]
                 for name, defaults in DEFAULTS.items()}
        _check_sizes(sizes, options["years"])
        self.timings = []
        started = time.monotonic()
        with transaction.atomic():
            existing = _existing()
            if any(existing.values()) and not options["flush"]:
                found = ", ".join(f"{count:,} {name}" for name, count in existing.items() if count)
                raise CommandError(
                    f"The database already has {found}. seed_demo fills an empty database only: run it "
                    "again with --flush to delete all packages, integrations, publications and attempts "
                    "first (the publishing history is lost).", returncode=1)
            if any(existing.values()):
                self._step("flush", lambda: _flush(postgres))
            seeder = Seeder(sizes=sizes, seed=options["seed"], years=options["years"], out=self)
            seeder.run()
        self._step("analyze", _analyze)
        self.stdout.write(
            f"Done in {time.monotonic() - started:.1f} s ({connection.vendor}, seed {options['seed']}): "
            f"{seeder.summary()}")

    def _step(self, name, work, rows=None):
        """Run one step and print how long it took; `rows` (or what `work` returns) is its size."""
        began = time.monotonic()
        result = work()
        rows = result if rows is None else rows
        seconds = time.monotonic() - began
        self.timings.append((name, seconds))
        size = f"{rows:>11,} {'objects' if 'index' in name else 'rows   '}" if isinstance(rows, int) else " " * 19
        self.stdout.write(f"  {name:<28}{size}  {seconds:7.1f} s")
        return result


def _check_sizes(sizes, years):
    if any(value < 0 for value in sizes.values()):
        raise CommandError("Sizes cannot be negative.")
    if sizes["packages_per_integration"] > sizes["packages"]:
        raise CommandError("--packages-per-integration cannot be more than --packages.")
    if sizes["publications"] and not sizes["integrations"]:
        raise CommandError("Publications need integrations: give --integrations.")
    if not 0.05 <= years <= 50:
        raise CommandError("--years must be between 0.05 and 50.")


def _existing():
    return {
        "packages": AssessmentPackage.objects.count(),
        "integrations": Integration.objects.count(),
        "publications": Publication.objects.count(),
        "attempts": PublicationAttempt.objects.count(),
    }


OURS = (PublicationAttempt, Publication, Membership, Integration, AssessmentPackage)  # children first


def _tables():
    return [m._meta.db_table for m in OURS]


def _references():
    """Other tables that point at ours: many-to-many links (deleted with the rows they link) and
    nullable foreign keys (set to NULL, as on_delete=SET_NULL would). Any other reference stops
    the flush, naming it, rather than deleting more than the four tables."""
    links, nullable, blocking = [], [], []
    for model in OURS:
        for rel in model._meta.get_fields(include_hidden=True):
            if not (rel.auto_created and not rel.concrete and (rel.one_to_many or rel.one_to_one)):
                continue
            other, field = rel.related_model, rel.field
            if other in OURS:
                continue
            if other._meta.auto_created:
                links.append(other)
            elif field.null:
                nullable.append((other, field))
            elif other._default_manager.exists():
                blocking.append(f"{other._meta.label} ({field.name})")
    if blocking:
        raise CommandError(f"--flush cannot delete rows that {', '.join(blocking)} refer to: delete those "
                           "first.", returncode=1)
    return list(dict.fromkeys(links)), nullable


def _flush(postgres):
    """Empty our tables (and the links to them). Returns the rows deleted or unlinked."""
    links, nullable = _references()
    quote = connection.ops.quote_name
    tables = [m._meta.db_table for m in links] + _tables()  # children first
    count = 0
    with connection.cursor() as cursor:
        for other, field in nullable:
            cursor.execute(f"UPDATE {quote(other._meta.db_table)} SET {quote(field.column)} = NULL "
                           f"WHERE {quote(field.column)} IS NOT NULL")
            count += cursor.rowcount
        for table in tables:
            cursor.execute(f"SELECT COUNT(*) FROM {quote(table)}")
            count += cursor.fetchone()[0]
        if postgres:
            # TRUNCATE (instant, and no dead rows left behind) what no other table points at.
            pointed_at = {field.related_model._meta.db_table for _, field in nullable}
            cursor.execute(f"TRUNCATE {', '.join(quote(t) for t in tables if t not in pointed_at)} "
                           "RESTART IDENTITY")
            tables = [t for t in tables if t in pointed_at]
        for table in tables:
            cursor.execute(f"DELETE FROM {quote(table)}")
    return count


def _analyze():
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ANALYZE " + ", ".join(map(connection.ops.quote_name, _tables())))
        else:
            cursor.execute("ANALYZE")


# --- loading -----------------------------------------------------------------------------------

def _load(table, columns, rows):
    """Rows into a table: COPY on PostgreSQL, batched executemany elsewhere. Returns the count."""
    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
    count = 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.copy(f"COPY {connection.ops.quote_name(table)} ({quoted}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    count += 1
            return count
        sql = (f"INSERT INTO {connection.ops.quote_name(table)} ({quoted}) "
               f"VALUES ({', '.join(['%s'] * len(columns))})")
        batch = []
        for row in rows:
            batch.append(row)
            if len(batch) == 10_000:
                cursor.executemany(sql, batch)
                count += len(batch)
                batch = []
        if batch:
            cursor.executemany(sql, batch)
            count += len(batch)
    return count


def _defaults(model, given):
    """{column: value} for the model's concrete columns not in `given`: the field's default, or
    NULL; a column added to the model since seed_demo was written is then filled as the ORM
    would, and one with neither stops the run, naming it."""
    values = {}
    for field in model._meta.concrete_fields:
        if field.column in given:
            continue
        if field.has_default():
            values[field.column] = field.get_db_prep_save(field.get_default(), connection)
        elif field.null:
            values[field.column] = None
        else:
            raise CommandError(f"seed_demo does not know what to put in {model._meta.db_table}."
                               f"{field.column}: update seed_demo.py.")
    return values


def _load_model(model, columns, rows):
    """Rows (values for `columns`) into the model's table, its other columns at their defaults."""
    extra = _defaults(model, columns)
    if extra:
        tail = tuple(extra.values())
        columns, rows = [*columns, *extra], (row + tail for row in rows)
    return _load(model._meta.db_table, columns, rows)


def _timestamp(column):
    """SQL for a timestamp from seconds since the epoch, in the form Django stores."""
    if connection.vendor == "postgresql":
        return f"to_timestamp({column})"
    return f"strftime('%Y-%m-%d %H:%M:%f', {column}, 'unixepoch')"


def _insert_select(model, expressions, source):
    """INSERT INTO the model's table SELECT `expressions` (column -> SQL) FROM `source`, the
    columns without an expression at their defaults."""
    columns = [f.column for f in model._meta.concrete_fields]
    unknown = set(expressions) - set(columns)
    if unknown:
        raise CommandError(f"seed_demo does not match {model.__name__}: no column {sorted(unknown)}. "
                           "Update seed_demo.py.")
    defaults = _defaults(model, expressions)
    params = [defaults[c] for c in columns if c in defaults]
    select = ", ".join(expressions.get(c, "%s") for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} "
            f"({', '.join(connection.ops.quote_name(c) for c in columns)}) "
            f"SELECT {select} FROM {source}", params or None)
        return cursor.rowcount


class Pool:
    """Distinct values (tuples) numbered from 1 in order of first use: the small tables that
    publications and attempts point at while staged."""

    def __init__(self):
        self.ids = {}

    def __call__(self, value):
        found = self.ids.get(value)
        if found is None:
            found = self.ids[value] = len(self.ids) + 1
        return found

    def rows(self):
        return ((pk, *value) for value, pk in self.ids.items())


# --- the dataset ---------------------------------------------------------------------------------

class Seeder:
    """Builds the rows from `seed` alone (and today's date): the same seed gives the same data."""

    def __init__(self, *, sizes, seed, years, out):
        self.sizes, self.out = sizes, out
        self.rng = random.Random(seed)
        self.end = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        self.start = self.end - years * 365.25 * DAY
        self.postgres = connection.vendor == "postgresql"
        self.counts = {}
        self.kombo_env = "acme-assessments"
        self.max_attempts = max(2, settings.KOMBO_MAX_ATTEMPTS)
        self.stories, self.attempt_kinds, self.successes = Pool(), Pool(), {}

    def summary(self):
        c = self.counts
        return (f"{c['packages']:,} packages, {c['integrations']:,} integrations offering "
                f"{self.sizes['packages_per_integration']:,} each, {c['bodies']:,} distinct bodies, "
                f"{c['publications']:,} publications, {c['attempts']:,} attempts.")

    def run(self):
        step = self.out._step
        if self.postgres:
            with connection.cursor() as cursor:
                # Django's foreign keys are checked at the commit: any left (on other tables) are
                # checked after each statement instead, so that their time shows in the step that
                # caused it, and indexes can be rebuilt (refused while checks are pending).
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            step("keys and indexes dropped", self.drop_keys)
        step("packages", self.load_packages)
        step("integrations", self.load_integrations)
        step("integration packages", self.load_memberships)
        step("staging tables", self.create_staging)
        step("bodies (staged)", self.stage_bodies)
        step("history planned", self.plan_history)
        step("publications (staged)", self.stage_publications)
        step("attempts (staged)", lambda: _load("seed_attempt", ATTEMPT_STAGE, self.attempt_rows))
        step("stories (staged)", self.stage_pools)
        step("staging analyzed", self.analyze_staging)
        step("publications", self.insert_publications)
        self.attempt_rows = None
        step("attempts", self.insert_attempts)
        if self.postgres:
            step("keys and indexes rebuilt", self.restore_keys)
        step("sequences", self.reset_sequences)
        step("staging dropped", self.drop_staging)

    # -- catalogue ------------------------------------------------------------------------------

    def load_packages(self):
        rng = self.rng
        candidates = _package_candidates()
        rng.shuffle(candidates)
        packages, n = [], self.sizes["packages"]
        for index in range(n):
            package_id, type_, name, description = candidates[index % len(candidates)]
            edition = index // len(candidates) + 1
            if edition > 1:  # more packages asked for than the vocabulary gives: later editions
                package_id, name = f"{package_id}-v{edition}", f"{name} (v{edition})"
            packages.append((package_id, type_, name, description))
        for package_id, _, name, description in packages:
            validate_single_line_text(package_id)
            validate_single_line_text(name)
            validate_description(description)
        self.packages = packages
        # Each package's bytes in the body once; bodies are joined from them in package id order.
        self.entry_bytes = [payloads.entry_bytes(payloads.package_entry(p)) for p in packages]
        self.rank = {pk: r for r, pk in enumerate(sorted(range(n), key=lambda i: packages[i][0]))}
        # Popular packages (a core most customers offer) and the long tail.
        order = list(range(n))
        rng.shuffle(order)
        self.core, self.tail = order[: max(1, n // 5)] if n else [], order[max(1, n // 5):]
        adapt = connection.ops.adapt_datetimefield_value
        rows = []
        for index, (package_id, type_, name, description) in enumerate(packages):
            created = self.start - rng.uniform(30, 400) * DAY
            updated = rng.uniform(created, self.end - DAY)
            rows.append((index + 1, package_id, type_, name, description,
                         adapt(_dt(created)), adapt(_dt(updated))))
        self.counts["packages"] = _load_model(
            AssessmentPackage,
            ["id", "package_id", "type", "name", "description", "created_at", "updated_at"], rows)
        return self.counts["packages"]

    # -- integrations ---------------------------------------------------------------------------

    def load_integrations(self):
        rng, n = self.rng, self.sizes["integrations"]
        self.buckets = _shares(rng, n, BUCKETS)
        paused = set(rng.sample(range(n), round(n * PAUSED_SHARE)))
        names = _company_names(rng, n)
        tools = [tool for tool, _ in TOOLS]
        tool_weights = [weight for _, weight in TOOLS]
        seen = set()
        # When each customer was connected: more of them lately (the vendor grows).
        self.onboarded = [self.start + (self.end - SPARE - 2 * DAY - self.start) * rng.random() ** 0.7
                          for _ in range(n)]
        self.tools = []
        adapt = connection.ops.adapt_datetimefield_value
        rows = []
        for i in range(n):
            tool = rng.choices(tools, tool_weights)[0]
            while True:
                kombo_id = f"{tool}:" + "".join(rng.choices(ALPHANUMERIC, k=rng.randint(20, 24)))
                if kombo_id not in seen:
                    break
            seen.add(kombo_id)
            integration_id_validator(kombo_id)
            validate_single_line_text(names[i])
            self.tools.append(tool)
            region = "US" if rng.random() < (0.7 if tool in US_TOOLS else 0.25) else "EU"
            created = self.onboarded[i] - rng.uniform(0.5, 20) * DAY
            updated = rng.uniform(max(created, self.end - 120 * DAY), self.end - 1)
            rows.append((i + 1, kombo_id, names[i], region, i not in paused,
                         adapt(_dt(created)), adapt(_dt(updated)), None, ""))
        self.paused = paused
        self.counts["integrations"] = _load_model(
            Integration,
            ["id", "kombo_integration_id", "name", "region", "is_active", "created_at", "updated_at",
             "publish_lease_until", "publish_lease_token"], rows)
        return self.counts["integrations"]

    def load_memberships(self):
        rng, per = self.rng, self.sizes["packages_per_integration"]
        self.offered = []
        for _ in range(self.sizes["integrations"]):
            from_core = min(len(self.core), round(per * rng.uniform(0.4, 0.8)))
            chosen = rng.sample(self.core, from_core) + rng.sample(self.tail, min(len(self.tail), per - from_core))
            if len(chosen) < per:  # a small tail: fill from the rest of the core
                taken = set(chosen)
                chosen += rng.sample([p for p in self.core if p not in taken], per - len(chosen))
            self.offered.append(frozenset(chosen))
        through = Membership._meta
        rows = ((n, i + 1, p + 1) for n, (i, p) in enumerate(
            ((i, p) for i, chosen in enumerate(self.offered) for p in sorted(chosen)), start=1))
        self.counts["memberships"] = _load_model(
            Membership,
            ["id", through.get_field("integration").column, through.get_field("assessmentpackage").column],
            rows)
        return self.counts["memberships"]

    # -- staging --------------------------------------------------------------------------------

    def create_staging(self):
        json_type = "jsonb" if self.postgres else "text"
        with connection.cursor() as cursor:
            for table, columns in STAGING.items():
                cursor.execute(f"DROP TABLE IF EXISTS {table}")
                cursor.execute(f"CREATE TEMPORARY TABLE {table} ({columns.format(json=json_type)})")
            if self.postgres:
                # Bodies compressed but inline: copying one into a publication then reads no TOAST
                # chunks. The join then hashes all of them: memory for that, in this transaction only.
                cursor.execute("ALTER TABLE seed_body ALTER COLUMN body SET STORAGE MAIN")
                cursor.execute("SET LOCAL work_mem = '256MB'")

    def analyze_staging(self):
        """Temporary tables get no statistics by themselves: the joins below need them."""
        with connection.cursor() as cursor:
            for table in STAGING:
                cursor.execute(f"ANALYZE {table}")

    def drop_staging(self):
        with connection.cursor() as cursor:
            for table in STAGING:
                cursor.execute(f"DROP TABLE {table}")

    def stage_bodies(self):
        """The package lists each integration has offered over time (the last one is what the
        catalogue gives now), each body built and hashed once and staged once."""
        self.versions = []  # per integration: body ids, oldest first (the last is the current body)
        self.body_sizes = {}
        self.counts["bodies"] = _load("seed_body", ["id", "body", "body_sha256", "package_count"],
                                      self._bodies())
        return self.counts["bodies"]

    def _bodies(self):
        rng, body_id, total = self.rng, 0, len(self.packages)
        for current in self.offered:
            sets = [current]
            for _ in range(rng.choice((0, 1, 1, 2, 2, 3, 4))):  # earlier package lists
                older = set(sets[-1])
                for _op in range(rng.randint(1, 3)):
                    # Going back in time: a package added since was not there, one removed since was.
                    if older and (len(older) == total or rng.random() < 0.6):
                        older.discard(rng.choice(sorted(older)))
                    elif len(older) < total:
                        while (added := rng.randrange(total)) in older:
                            pass
                        older.add(added)
                if older != sets[-1]:
                    sets.append(frozenset(older))
            if len(sets) == 1 and total:  # "changed since" needs an earlier list: give every one that can
                older = set(current)
                older.symmetric_difference_update({rng.randrange(total)})
                sets.append(frozenset(older))
            sets.reverse()
            ids = []
            for chosen in sets:
                body_id += 1
                ordered = sorted(chosen, key=self.rank.__getitem__)
                data = payloads.join_entries([self.entry_bytes[p] for p in ordered])
                ids.append(body_id)
                yield body_id, data.decode("utf-8"), payloads.body_sha256(data), len(ordered)
            self.versions.append(ids)

    # -- history --------------------------------------------------------------------------------

    def plan_history(self):
        """Who published when with which body, and what each publication's story is: one entry
        per publication, ordered by request time (publication ids follow that order)."""
        rng, n = self.rng, self.sizes["integrations"]
        for i in range(n):
            if self.buckets[i] == "changed" and len(self.versions[i]) < 2:
                self.buckets[i] = "in_sync"  # (no other list was possible)
        publishing = [i for i in range(n) if self.buckets[i] != "never"]
        total = self.sizes["publications"]
        if len(publishing) > total:  # fewer publications than integrations: the rest never published
            for i in publishing[total:]:
                self.buckets[i] = "never"
            publishing = publishing[:total]
        # Busy customers publish far more than quiet ones, and longer-connected ones more.
        weights = [rng.lognormvariate(0, 0.8) * (self.end - self.onboarded[i]) for i in publishing]
        per_integration = _apportion(total, weights, minimum=1)
        story_names = [name for name, _ in STORIES]
        story_weights = [weight for _, weight in STORIES]
        entries = []
        for i, count in zip(publishing, per_integration):
            first, last = self.onboarded[i], self.end - SPARE
            times = sorted(rng.uniform(first, last) for _ in range(count))
            times[0] = first
            gap = min(120.0, (last - first) / count)
            for j in range(1, count):  # a couple of minutes apart at least
                times[j] = max(times[j], times[j - 1] + gap)
            versions = self.versions[i]
            bucket = self.buckets[i]
            published = versions[:-1] if bucket == "changed" else versions
            # The history splits into one run of publications per package list, in order.
            runs = min(len(published), count)
            published = published[len(published) - runs:]
            cuts = sorted(rng.sample(range(1, count), runs - 1)) if runs > 1 else []
            bodies, version = [], 0
            for j in range(count):
                while version < len(cuts) and j >= cuts[version]:
                    version += 1
                bodies.append(published[version])
            stories = rng.choices(story_names, story_weights, k=count)
            if rng.random() < 0.05:
                stories[0] = "sync_wait"  # the customer's first sync had not finished yet
            final = {"in_sync": rng.choice(("ok",) * 9 + ("retried",)), "changed": "ok",
                     "failed": rng.choice(("failed",) * 4 + ("failed_no_retry", "gave_up", "cancelled",
                                                              "cancelled_in_flight"))}[bucket]
            stories[-1] = final
            # A superseded one was requested shortly before the newer one that replaced it (from
            # the last back, so that the newer one's time is final).
            for j in range(count - 2, -1, -1):
                if stories[j].startswith("superseded"):
                    before = times[j - 1] if j else first - 600
                    times[j] = times[j + 1] - min(rng.uniform(5, 600), (times[j + 1] - before) / 2)
            for j in range(count):
                story = stories[j]
                following = times[j + 1] if j + 1 < count else self.end
                if story in LONG_STORIES and following - times[j] < 6 * 3600:
                    story = "ok"  # retries take minutes: only where the next request is hours away
                entries.append((times[j], i, story, bodies[j], following))
        entries.sort()
        self.entries = entries
        return len(entries)

    def stage_publications(self):
        self.attempt_rows = []
        # Read before the COPY starts: the connection runs nothing else meanwhile.
        self.staff = list(get_user_model().objects.filter(is_staff=True).order_by("pk")
                          .values_list("pk", flat=True))
        self.counts["publications"] = _load("seed_plan", PLAN_STAGE, self._publications())
        self.counts["attempts"] = len(self.attempt_rows)
        self.entries = None
        return self.counts["publications"]

    def _publications(self):
        rng = self.rng
        users = self.staff
        user_weights = [1.0 / (rank + 1) for rank in range(len(users))]  # a few staff do most
        attempts = self.attempt_rows
        attempt_id = 0
        rate_headers = [json.dumps({"ratelimit-limit": "300", "ratelimit-remaining": str(r),
                                    "ratelimit-reset": str(s)})
                        for r, s in ((299, 59), (287, 41), (251, 33), (214, 17), (176, 52), (98, 8))]
        for pk, (requested, i, story, body_id, following) in enumerate(self.entries, start=1):
            requested_by = (rng.choices(users, user_weights)[0]
                            if users and rng.random() > SCRIPT_SHARE else None)
            enqueued = requested + rng.uniform(0.02, 0.3)
            token = "%032x" % rng.getrandbits(128)
            headers = rng.choice(rate_headers)
            tries = []  # (started, finished, attempt kind, wait)
            clock = enqueued + rng.uniform(0.05, 2.5)
            cancel_requested, cancelled_by = None, None
            if story in ("ok", "retried", "sync_wait", "cancelled_in_flight"):
                if story == "retried":
                    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
                        error = rng.choice(TRANSIENT_ERRORS)
                        wait = _backoff(rng, len(tries) + 1, error)
                        finished = clock + _duration(rng, error)
                        tries.append((clock, finished, self._error_kind(error, outcomes.TRANSIENT), wait))
                        clock = finished + wait + rng.uniform(0.01, 0.5)
                elif story == "sync_wait":
                    for _ in range(rng.randint(1, 3)):
                        wait = settings.KOMBO_SYNC_PENDING_RETRY_SECONDS
                        finished = clock + rng.uniform(0.2, 0.9)
                        tries.append((clock, finished, self._error_kind(SYNC_PENDING, outcomes.SYNC_PENDING), wait))
                        clock = finished + wait + rng.uniform(0.01, 2)
                warnings = WARNINGS.get(self.tools[i], ())
                if not warnings and rng.random() < 0.01:
                    warnings = (rng.choice(RARE_WARNINGS),)
                answer, warnings_json, kind = self._success(warnings)
                finished = clock + rng.uniform(0.25, 1.8)
                tries.append((clock, finished, kind, None))
                if story == "cancelled_in_flight":
                    reason = rng.choice(CANCEL_REASONS)
                    cancel_requested = clock + rng.uniform(0.05, 0.2)
                    cancelled_by = requested_by
                    story_id = self.stories((
                        Status.CANCELLED.value, 200, answer, warnings_json, "", "", "", "", headers,
                        f"Cancelled: {reason}{transitions.IN_FLIGHT_CANCEL}", reason))
                else:
                    story_id = self.stories((Status.SUCCEEDED.value, 200, answer, warnings_json, "", "", "", "",
                                             headers, "", ""))
                end = finished
            elif story in ("failed", "failed_no_retry", "gave_up"):
                if story == "gave_up":
                    for number in range(1, self.max_attempts + 1):
                        error = rng.choice(TRANSIENT_ERRORS)
                        last = number == self.max_attempts
                        wait = None if last else _backoff(rng, number, error)
                        finished = clock + _duration(rng, error)
                        tries.append((clock, finished, self._error_kind(error, outcomes.TRANSIENT), wait))
                        clock = finished + (wait or 0) + rng.uniform(0.01, 0.5)
                    reason = f"Gave up after {self.max_attempts} attempts. Last error: {_reason(error)}"
                else:
                    errors = PERMANENT_ERRORS if story == "failed" else NO_RETRY_ERRORS
                    error = rng.choice(errors)
                    kind = (kombo.ErrorKind.PERMANENT if story == "failed" else kombo.ErrorKind.NO_AUTO_RETRY).value
                    finished = clock + _duration(rng, error)
                    tries.append((clock, finished, self._error_kind(error, kind), None))
                    reason = _reason(error)
                    if story == "failed_no_retry":
                        reason += (" Kombo advises against retrying this automatically: check the log, "
                                   "then publish again.")
                story_id = self.stories((Status.FAILED.value, *self._error_fields(error, headers), reason, ""))
                end = finished
            elif story.startswith("superseded"):
                error = None
                if story == "superseded_retrying":
                    error = rng.choice(TRANSIENT_ERRORS)
                    finished = clock + min(_duration(rng, error), 2.0)
                    tries.append((clock, finished, self._error_kind(error, outcomes.TRANSIENT),
                                  _backoff(rng, 1, error)))
                end = following + rng.uniform(0.05, 0.6)
                fields = self._error_fields(error, headers) if error else (None, "", "[]", "", "", "", "", "{}")
                story_id = self.stories((Status.SUPERSEDED.value, *fields, transitions.SUPERSEDED_REASON, ""))
            elif story == "cancelled":
                paused = i in self.paused and rng.random() < 0.5
                reason = "The integration is paused." if paused else rng.choice(CANCEL_REASONS)
                cancelled_by = None if paused else requested_by
                end = requested + rng.uniform(3, max(3.0, min(300.0, (following - requested) / 2)))
                story_id = self.stories((Status.CANCELLED.value, None, "", "[]", "", "", "", "", "{}",
                                         f"Cancelled: {reason}", reason))
            else:
                raise AssertionError(story)
            for number, (began, finished, kind, wait) in enumerate(tries, start=1):
                attempt_id += 1
                attempts.append((attempt_id, pk, number, began, finished, kind, wait))
            yield (pk, i + 1, body_id, story_id, requested_by, requested, enqueued, len(tries),
                   tries[0][0] if tries else None, end, token if tries else "", cancel_requested,
                   cancelled_by)

    def _success(self, warnings):
        """Kombo's answer, the warnings as stored and the attempt's kind, for these warnings."""
        found = self.successes.get(warnings)
        if found is None:
            answer = json.dumps({"status": "success", "data": {},
                                 "warnings": [{"message": w} for w in warnings]})
            kind = self.attempt_kinds((200, "", outcomes.SUCCEEDED,
                                       outcomes.success_message(SimpleNamespace(warnings=warnings))))
            found = self.successes[warnings] = (answer, json.dumps(list(warnings)), kind)
        return found

    def _error_kind(self, error, outcome):
        return self.attempt_kinds((error[0], error[1] or "", outcome, _reason(error)))

    def _error_fields(self, error, headers):
        """http_status, response_body, warnings, error code/title/message/log_url, rate limit
        headers: Kombo's error as outcomes.error_fields stores it."""
        status, code, title, message = error[:4]
        if code is None and status is None:  # no answer at all
            return (None, "", "[]", "", "", "", "", "{}")
        if code is None:  # an HTML page from a proxy
            return (status, error[4], "[]", "", "", "", "", "{}")
        log_url = f"https://app.kombo.dev/{self.kombo_env}/logs?interactionId={self.rng.randrange(10**11, 10**12)}"
        body = json.dumps({"status": "error", "error": {"code": code, "title": title, "message": message,
                                                         "log_url": log_url}})
        return (status, body, "[]", code, title or "", message, log_url, headers)

    def stage_pools(self):
        rows = _load("seed_story", STORY_COLUMNS, self.stories.rows())
        rows += _load("seed_attempt_kind", ["id", "http_status", "error_code", "outcome", "message"],
                      self.attempt_kinds.rows())
        return rows

    def insert_publications(self):
        ts = _timestamp
        expressions = {
            "id": "p.id", "integration_id": "p.integration_id", "requested_by_id": "p.requested_by_id",
            "requested_at": ts("p.requested_at"), "status": "s.status", "body": "b.body",
            "body_sha256": "b.body_sha256", "package_count": "b.package_count",
            "enqueued_at": ts("p.enqueued_at"), "attempts": "p.attempts", "next_attempt_at": "NULL",
            "http_status": "s.http_status", "response_body": "s.response_body", "warnings": "s.warnings",
            "error_code": "s.error_code", "error_title": "s.error_title", "error_message": "s.error_message",
            "error_log_url": "s.error_log_url", "failure_reason": "s.failure_reason",
            "rate_limit_headers": "s.rate_limit_headers", "started_at": ts("p.started_at"),
            "finished_at": ts("p.finished_at"), "lease_token": "p.lease_token",
            "cancel_requested_at": ts("p.cancel_requested_at"), "cancelled_by_id": "p.cancelled_by_id",
            "cancel_reason": "s.cancel_reason",
            # Where each went: the integration's id and region (seed_demo never moves one).
            "target_kombo_integration_id": "i.kombo_integration_id", "target_region": "i.region",
        }
        integrations = connection.ops.quote_name(Integration._meta.db_table)
        written = _insert_select(Publication, expressions,
                                 "seed_plan p JOIN seed_body b ON b.id = p.body_id "
                                 "JOIN seed_story s ON s.id = p.story_id "
                                 f"JOIN {integrations} i ON i.id = p.integration_id")
        if written != self.counts["publications"]:
            raise CommandError(f"Staged {self.counts['publications']} publications but inserted {written}.")
        return written

    def insert_attempts(self):
        expressions = {
            "id": "a.id", "publication_id": "a.publication_id", "number": "a.number",
            "started_at": _timestamp("a.started_at"), "finished_at": _timestamp("a.finished_at"),
            "http_status": "k.http_status", "error_code": "k.error_code", "outcome": "k.outcome",
            "message": "k.message", "wait_seconds": "a.wait_seconds",
        }
        written = _insert_select(PublicationAttempt, expressions,
                                 "seed_attempt a JOIN seed_attempt_kind k ON k.id = a.kind_id")
        if written != self.counts["attempts"]:
            raise CommandError(f"Staged {self.counts['attempts']} attempts but inserted {written}.")
        return written

    def drop_keys(self):
        """PostgreSQL's advice for a bulk load: foreign keys checked once, by one query each, and
        indexes built once, after the load, cost far less than a check and an index insert per row.
        Primary keys and unique constraints stay. What is dropped here is added back from its own
        definition by restore_keys, in this transaction: if anything fails, all is as it was."""
        self.dropped_keys, self.dropped_indexes = [], []
        with connection.cursor() as cursor:
            for model in (Membership, Publication, PublicationAttempt):
                table = connection.ops.quote_name(model._meta.db_table)
                cursor.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                               "WHERE contype = 'f' AND conrelid = %s::regclass ORDER BY conname", [table])
                self.dropped_keys += [(table, name, definition) for name, definition in cursor.fetchall()]
                cursor.execute(
                    "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
                    "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = %s::regclass "
                    "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid) "
                    "ORDER BY i.relname", [table])
                self.dropped_indexes += cursor.fetchall()
            for table, name, _ in self.dropped_keys:
                cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {connection.ops.quote_name(name)}")
            for name, _ in self.dropped_indexes:
                cursor.execute(f"DROP INDEX {connection.ops.quote_name(name)}")
        return len(self.dropped_keys) + len(self.dropped_indexes)

    def restore_keys(self):
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
            for _, definition in self.dropped_indexes:
                cursor.execute(definition)
            for table, name, definition in self.dropped_keys:
                cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {connection.ops.quote_name(name)} {definition}")
        return len(self.dropped_keys) + len(self.dropped_indexes)

    def reset_sequences(self):
        """Explicit ids went in: move each id sequence past them, so the ORM's inserts work."""
        statements = connection.ops.sequence_reset_sql(
            no_style(), [AssessmentPackage, Integration, Membership, Publication, PublicationAttempt])
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)


# --- staging tables (temporary: they vanish with the session) -----------------------------------

STAGING = {
    "seed_body": "id integer PRIMARY KEY, body text NOT NULL, body_sha256 varchar(64) NOT NULL, "
                 "package_count integer NOT NULL",
    "seed_story": "id integer PRIMARY KEY, status varchar(16) NOT NULL, http_status integer, "
                  "response_body text NOT NULL, warnings {json} NOT NULL, error_code text NOT NULL, "
                  "error_title text NOT NULL, error_message text NOT NULL, error_log_url text NOT NULL, "
                  "rate_limit_headers {json} NOT NULL, failure_reason text NOT NULL, cancel_reason text NOT NULL",
    "seed_plan": "id bigint NOT NULL, integration_id bigint NOT NULL, body_id integer NOT NULL, "
                 "story_id integer NOT NULL, requested_by_id integer, requested_at double precision NOT NULL, "
                 "enqueued_at double precision, attempts integer NOT NULL, started_at double precision, "
                 "finished_at double precision, lease_token varchar(32) NOT NULL, "
                 "cancel_requested_at double precision, cancelled_by_id integer",
    "seed_attempt_kind": "id integer PRIMARY KEY, http_status integer, error_code text NOT NULL, "
                         "outcome text NOT NULL, message text NOT NULL",
    "seed_attempt": "id bigint NOT NULL, publication_id bigint NOT NULL, number integer NOT NULL, "
                    "started_at double precision NOT NULL, finished_at double precision, kind_id integer NOT NULL, "
                    "wait_seconds double precision",
}
STORY_COLUMNS = ["id", "status", "http_status", "response_body", "warnings", "error_code", "error_title",
                 "error_message", "error_log_url", "rate_limit_headers", "failure_reason", "cancel_reason"]
PLAN_STAGE = ["id", "integration_id", "body_id", "story_id", "requested_by_id", "requested_at", "enqueued_at",
              "attempts", "started_at", "finished_at", "lease_token", "cancel_requested_at", "cancelled_by_id"]
ATTEMPT_STAGE = ["id", "publication_id", "number", "started_at", "finished_at", "kind_id", "wait_seconds"]


# --- helpers ------------------------------------------------------------------------------------

def _dt(seconds):
    return datetime.fromtimestamp(seconds, timezone.utc)


def _shares(rng, n, shares):
    """`n` labels in the given shares, shuffled; every label at least once when n allows."""
    counts = [int(n * share) for _, share in shares]
    if n >= len(shares):
        counts = [max(1, c) for c in counts]
    while sum(counts) > n:
        counts[counts.index(max(counts))] -= 1
    counts[0] += n - sum(counts)
    labels = [label for (label, _), c in zip(shares, counts) for _ in range(c)]
    rng.shuffle(labels)
    return labels


def _apportion(total, weights, *, minimum):
    """Split `total` into integers proportional to `weights`, each at least `minimum`."""
    if not weights:
        return []
    base = [minimum] * len(weights)
    rest = total - minimum * len(weights)
    scale = sum(weights)
    shares = [rest * w / scale for w in weights]
    counts = [b + int(s) for b, s in zip(base, shares)]
    by_remainder = sorted(range(len(weights)), key=lambda k: shares[k] - int(shares[k]), reverse=True)
    for k in by_remainder[: total - sum(counts)]:
        counts[k] += 1
    return counts


def _backoff(rng, attempt, error):
    if error[0] == 429:
        return float(rng.randint(1, 60))  # Kombo's Retry-After
    cap = min(settings.KOMBO_RETRY_MAX_WAIT_SECONDS, settings.KOMBO_RETRY_BASE_SECONDS * 2 ** (attempt - 1))
    return round(rng.uniform(0, cap), 3)


def _duration(rng, error):
    if error[0] is None and "read timeout" in (error[3] or ""):
        return 30.0 + rng.uniform(0, 0.05)  # the default read timeout, as its message says
    return rng.uniform(0.1, 1.5)


def _reason(error):
    """The reason kombo.py gives for an error (the attempt's message, the failure reason)."""
    status, code, title, message = error[:4]
    if status is None:
        return message
    if code is None and title is None:
        return f"Kombo answered HTTP {status} with a non-JSON body: {message}"
    return f"Kombo answered HTTP {status} {code}: {message}"


# (http status, code, title, message[, body]); a status without code: a proxy's page.
TRANSIENT_ERRORS = (
    (429, "PLATFORM.RATE_LIMIT_EXCEEDED", "Rate limit exceeded.",
     "You have exceeded the rate limit of 300 requests per 60 seconds."),
    (429, "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED", "Concurrency limit exceeded.",
     "Too many requests are in flight for this integration."),
    (503, "REMOTE.SERVICE_UNAVAILABLE", "The ATS is unavailable.",
     "The ATS did not respond in time. Please try again later."),
    (503, "REMOTE.RATE_LIMIT_EXCEEDED", "The ATS rate limit was reached.",
     "The ATS asked Kombo to slow down. Please try again later."),
    (502, None, None, "502 Bad Gateway nginx", "<html><head><title>502 Bad Gateway</title></head>"
     "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"),
    (None, None, None, "Kombo did not answer within 30 s (read timeout)."),
    (None, None, None, "Connection to Kombo failed: ConnectionError: Connection reset by peer"),
)
SYNC_PENDING = (409, "INTEGRATION.SETUP_SYNC_PENDING", "The integration's initial sync is still running.",
                "This integration is still running its first sync. Please retry once it has finished.")
PERMANENT_ERRORS = (
    (404, "PLATFORM.INTEGRATION_NOT_FOUND", "The integration was not found.",
     "No integration with this id exists in this environment. It may have been deleted."),
    (403, "INTEGRATION.INACTIVE", "The integration is inactive.",
     "This integration is inactive. The customer must reconnect it."),
    (403, "INTEGRATION.PERMISSION_MISSING", "A permission is missing in the ATS.",
     "The API user in the ATS may not manage assessment packages. Ask the customer to grant it."),
    (401, "INTEGRATION.AUTHENTICATION_INVALID", "The ATS credentials are invalid.",
     "The ATS rejected the stored credentials. The customer must reconnect the integration."),
    (409, "INTEGRATION.SETUP_INCOMPLETE", "The integration setup is incomplete.",
     "The customer has not finished setting up this integration in Kombo Connect."),
    (400, "PLATFORM.INPUT_INVALID", "The input is invalid.",
     "packages: the ATS accepts at most 100 packages per customer."),
)
NO_RETRY_ERRORS = (
    (500, "PLATFORM.UNKNOWN_ERROR", "An unknown error occurred.",
     "Something went wrong on our side. Our team has been notified."),
    (502, "REMOTE.UNKNOWN_HTTP_ERROR", "The ATS answered with an unexpected error.",
     "The ATS answered HTTP 500 Internal Server Error."),
)
WARNINGS = {
    tool: (f"{label} cannot take packages through the API: the customer must enter them by hand in the "
           "ATS (Kombo can export a CSV of names and reference ids).",)
    for tool, label in (("workday", "Workday"), ("successfactors", "SAP SuccessFactors"))
}
RARE_WARNINGS = (
    "Some package names are longer than 50 characters and are cut in this ATS.",
    "The ATS shows package descriptions as plain text: formatting is removed.",
)
CANCEL_REASONS = (
    "Published by mistake.", "Wrong package list: fixing the catalogue first.",
    "The customer asked us to wait until their new hiring process starts.", "Duplicate of another publish.",
)
TOOLS = (
    ("greenhouse", 14), ("lever", 9), ("workday", 9), ("successfactors", 5), ("smartrecruiters", 8),
    ("personio", 9), ("recruitee", 8), ("teamtailor", 8), ("workable", 7), ("bamboohr", 5),
    ("icims", 5), ("jobvite", 3), ("ashby", 5), ("softgarden", 3), ("dvinci", 2), ("cornerstone", 3),
    ("taleo", 2), ("jazzhr", 2), ("breezyhr", 2), ("pinpoint", 2),
)
US_TOOLS = {"icims", "jobvite", "taleo", "jazzhr", "breezyhr", "ashby", "greenhouse", "lever", "bamboohr"}
ALPHANUMERIC = string.ascii_letters + string.digits


def _company_names(rng, n):
    first = ("Acme", "Northwind", "Bluebird", "Evergreen", "Silverline", "Redwood", "Brightpath",
             "Ironbridge", "Summit", "Harbor", "Lakeside", "Crescent", "Pioneer", "Atlas", "Orion",
             "Nordlicht", "Alpen", "Rheinland", "Hanse", "Müller & Söhne", "Zürcher", "Øresund",
             "Société Générale des", "Lumière", "Côte", "Iberia", "Sierra", "Baltic", "Vistula",
             "Danube", "Meridian", "Keystone", "Granite", "Cedar", "Falcon", "Heron", "Maple",
             "Oakridge", "Riverside", "Stonegate", "Sunrise", "Tidewater", "Westbrook", "Golden Gate",
             "Blue Ridge", "Great Lakes", "Prairie", "Cascade", "Coastal", "Frontier", "Liberty",
             "Patriot", "Beacon", "Compass", "Horizon", "Pinnacle", "Quantum", "Vertex", "Nova", "Zenith")
    second = ("Logistics", "Health", "Retail", "Foods", "Energy", "Insurance", "Bank", "Hotels",
              "Software", "Systems", "Engineering", "Construction", "Pharma", "Care", "Mobility",
              "Airlines", "Telecom", "Media", "Consulting", "Staffing", "Security", "Manufacturing",
              "Automotive", "Fashion", "Education", "Clinics", "Labs", "Robotics", "Analytics", "Capital",
              "Facilities", "Hospitality", "Transport", "Utilities", "Dairy", "Brewing", "Outdoor",
              "Home Care", "Dental", "Recruiting")
    suffixes = ("GmbH", "AG", "B.V.", "SAS", "S.L.", "AB", "Ltd", "S.p.A.", "Sp. z o.o.", "ApS",
                "Inc.", "LLC", "Corp.", "Group", "& Co. KG", "Oy")
    space = len(first) * len(second) * len(suffixes)
    picks = rng.sample(range(space), min(n, space))
    names = []
    for index in picks:
        a, rest = divmod(index, len(second) * len(suffixes))
        b, c = divmod(rest, len(suffixes))
        names.append(f"{first[a]} {second[b]} {suffixes[c]}")
    for extra in range(n - len(names)):
        names.append(f"{names[extra % space]} {extra // space + 2}")
    return names


def _package_candidates():
    """Every package the vocabulary gives: (package_id, type, name, description), in a fixed order."""
    out = []
    levels = (("junior", "junior", 20), ("mid", "mid-level", 35), ("senior", "senior", 50))
    for slug, subject, topics in SKILLS:
        for level_slug, level, minutes in levels:
            out.append((f"skills-{slug}-{level_slug}", PackageType.SKILLS_TEST.value, f"{subject} ({level})",
                        f"{minutes}-minute {subject} test for {level} candidates: {topics}. Scored "
                        f"automatically, with a percentile against candidates who took it."))
    for slug, name, what in BEHAVIORAL:
        for lang, language in LANGUAGES:
            out.append((f"behavioral-{slug}-{lang}", PackageType.BEHAVIORAL.value, f"{name} ({lang.upper()})",
                        f"{what}\nCandidate-facing language: {language}. Report in English."))
    for slug, role in VIDEO_ROLES:
        for fmt_slug, fmt, minutes in (("3q", "3 questions", 10), ("5q", "5 questions", 15),
                                       ("live", "live, 30 minutes", 30)):
            out.append((f"video-{slug}-{fmt_slug}", PackageType.VIDEO_INTERVIEW.value,
                        f"Video interview: {role} ({fmt})",
                        f"{'Live' if fmt_slug == 'live' else 'One-way'} video interview for {role.lower()} "
                        f"roles, about {minutes} minutes, with questions from our validated library. "
                        "Recordings are kept for 90 days."))
    for slug, check, turnaround in BACKGROUND:
        for country_slug, country in COUNTRIES:
            out.append((f"bg-{slug}-{country_slug}", PackageType.BACKGROUND_CHECK.value, f"{check} – {country}",
                        f"{check} in {country}, done by accredited local partners. Typical turnaround: "
                        f"{turnaround}. The candidate gives consent online before it starts."))
    for slug, name, what in REFERENCES:
        for lang, language in LANGUAGES[:5]:
            out.append((f"ref-{slug}-{lang}", PackageType.REFERENCE_CHECK.value, f"{name} ({lang.upper()})",
                        f"{what} Questionnaire in {language}."))
    return out


SKILLS = (
    ("python", "Python", "data structures, testing and debugging"), ("java", "Java", "OOP, collections, concurrency"),
    ("javascript", "JavaScript", "the DOM, async code and closures"), ("typescript", "TypeScript", "types, generics and tooling"),
    ("go", "Go", "goroutines, interfaces and the standard library"), ("csharp", "C#", ".NET, LINQ and async"),
    ("cpp", "C++", "memory, templates and the STL"), ("rust", "Rust", "ownership, traits and error handling"),
    ("php", "PHP", "modern PHP and Laravel"), ("ruby", "Ruby", "Ruby and Rails conventions"),
    ("kotlin", "Kotlin", "coroutines and Android basics"), ("swift", "Swift", "SwiftUI and concurrency"),
    ("sql", "SQL", "joins, window functions and query plans"), ("react", "React", "hooks, state and rendering"),
    ("node", "Node.js", "APIs, streams and the event loop"), ("kubernetes", "Kubernetes", "deployments, networking and debugging"),
    ("aws", "AWS", "IAM, networking and serverless"), ("linux", "Linux administration", "the shell, services and permissions"),
    ("security", "Cybersecurity fundamentals", "threats, controls and incident response"),
    ("data-analysis", "Data analysis", "cleaning, aggregating and presenting data"),
    ("excel", "Excel", "formulas, pivot tables and charts"), ("power-bi", "Power BI", "models, DAX and reports"),
    ("bookkeeping", "Bookkeeping", "ledgers, reconciliations and VAT"), ("accounting", "Financial accounting", "IFRS statements and closing"),
    ("sales", "Sales negotiation", "discovery, objections and closing"), ("support-writing", "Customer support writing", "tone, clarity and empathy"),
    ("project", "Project management", "planning, risks and stakeholders"), ("scrum", "Agile & Scrum", "roles, events and artefacts"),
    ("numerical", "Numerical reasoning", "tables, rates and percentages"), ("verbal", "Verbal reasoning", "reading and inference"),
    ("logical", "Logical reasoning", "patterns and sequences"), ("attention", "Attention to detail", "checking and comparing records"),
    ("english-b2", "English B2", "reading, listening and writing"), ("english-c1", "English C1", "reading, listening and writing"),
    ("german-b2", "Deutsch B2", "Lesen, Hören und Schreiben"), ("french-b2", "Français B2", "compréhension écrite et orale"),
    ("spanish-b2", "Español B2", "comprensión lectora y auditiva"), ("dutch-b2", "Nederlands B2", "lezen, luisteren en schrijven"),
    ("typing", "Typing speed", "words per minute and accuracy"), ("mechanical", "Mechanical reasoning", "forces, gears and levers"),
)
BEHAVIORAL = (
    ("big-five", "Big Five personality profile", "A 25-minute questionnaire on the five broad personality traits, "
     "normed per country."),
    ("work-style", "Work style questionnaire", "How the candidate prefers to plan, decide and collaborate."),
    ("leadership", "Leadership potential", "Drive, judgement and influence, for first-line and middle managers."),
    ("sjt-retail", "Situational judgement: retail", "Realistic scenarios from the shop floor: customers, "
     "colleagues and priorities."),
    ("sjt-contact", "Situational judgement: contact centre", "Scenarios from a busy contact centre."),
    ("sjt-care", "Situational judgement: care", "Scenarios from nursing and care homes, reviewed by nurses."),
    ("sjt-graduate", "Situational judgement: graduates", "Scenarios for graduate schemes across functions."),
    ("integrity", "Integrity and reliability", "Attitudes to rules, honesty and dependability."),
    ("motivation", "Motivation profile", "What energises the candidate at work, and what drains them."),
    ("resilience", "Resilience under pressure", "How the candidate copes with setbacks, change and stress."),
)
LANGUAGES = (("en", "English"), ("de", "Deutsch"), ("fr", "Français"), ("es", "Español"), ("nl", "Nederlands"),
             ("it", "Italiano"), ("pl", "Polski"), ("pt", "Português"))
VIDEO_ROLES = (
    ("sales", "Sales representative"), ("csm", "Customer success manager"), ("engineer", "Software engineer"),
    ("graduate", "Graduate programme"), ("warehouse", "Warehouse operative"), ("hospitality", "Hospitality staff"),
    ("nurse", "Nurse"), ("store-manager", "Store manager"), ("contact-centre", "Contact centre agent"),
    ("marketing", "Marketing specialist"), ("analyst", "Data analyst"), ("driver", "Delivery driver"),
)
BACKGROUND = (
    ("criminal", "Criminal record check", "3 to 5 working days"), ("identity", "Identity verification", "minutes"),
    ("right-to-work", "Right to work check", "1 working day"), ("education", "Education verification", "5 to 10 working days"),
    ("employment-5y", "Employment history (5 years)", "5 to 10 working days"),
    ("employment-10y", "Employment history (10 years)", "10 to 15 working days"),
    ("credit", "Credit check", "1 working day"), ("driving", "Driving licence check", "2 working days"),
    ("sanctions", "Sanctions and PEP screening", "minutes"), ("licence", "Professional licence verification", "3 working days"),
    ("media", "Adverse media screening", "1 to 2 working days"), ("drug", "Drug test (5-panel)", "2 to 4 working days"),
)
COUNTRIES = (
    ("uk", "United Kingdom"), ("de", "Germany"), ("fr", "France"), ("nl", "Netherlands"), ("es", "Spain"),
    ("it", "Italy"), ("pl", "Poland"), ("se", "Sweden"), ("us-federal", "United States (federal)"),
    ("us-county", "United States (county)"), ("ca", "Canada"), ("au", "Australia"), ("in", "India"),
    ("br", "Brazil"), ("mx", "Mexico"),
)
REFERENCES = (
    ("standard-2", "Reference check, 2 referees", "Two referees answer a structured online questionnaire."),
    ("standard-3", "Reference check, 3 referees", "Three referees answer a structured online questionnaire."),
    ("executive", "Executive reference check", "Structured phone interviews with former managers and peers."),
    ("healthcare", "Healthcare reference check", "Reference check for regulated care roles, with registration checks."),
    ("graduate", "Graduate reference check", "An academic and a personal referee answer online."),
    ("automated", "Automated reference check", "Referees are invited and reminded automatically; results in 48 hours."),
)
