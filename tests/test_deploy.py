"""Production as deployed: gunicorn serving the app with production settings, static files from
whitenoise, the health endpoint over plain HTTP, everything else redirected to HTTPS."""
import os
import secrets
import subprocess
import sys

import requests

from .processes import ROOT, Process, free_port, wait_for


def production_env(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "KOMBO_", "DATABASE_", "CELERY_", "TEST_", "APP_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "kombo_admin.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "publisher.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CELERY_BROKER_URL": os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/15"),
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
        "APP_VAR_DIR": str(tmp_path / "var"),
        "KOMBO_API_KEY": "prod-like-key-0000000000",
    })
    return env


def test_gunicorn_serves_static_files_health_and_redirects_to_https(tmp_path):
    env = production_env(tmp_path)
    collected = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert collected.returncode == 0, collected.stderr
    port = free_port()
    server = Process([sys.executable, "-m", "gunicorn", "kombo_admin.wsgi", "--bind", f"127.0.0.1:{port}",
                      "--workers", "1"], tmp_path / "gunicorn.log", env)
    try:
        base = f"http://127.0.0.1:{port}"
        host = {"Host": "publisher.example.com"}

        def up():
            try:
                return requests.get(f"{base}/health/", headers=host, timeout=2,
                                    allow_redirects=False).status_code in (200, 503)
            except requests.ConnectionError:
                return False

        wait_for(up, 30, "gunicorn to answer")
        health = requests.get(f"{base}/health/", headers=host, timeout=5, allow_redirects=False)
        assert health.status_code == 200 and health.json() == {"status": "ok", "database": "ok", "broker": "ok"}

        # Never follow a redirect: it would point at the public host name.
        https = {**host, "X-Forwarded-Proto": "https"}
        css = requests.get(f"{base}/static/admin/css/base.css", headers={**https, "Accept-Encoding": "gzip"},
                           timeout=5, allow_redirects=False)
        assert css.status_code == 200 and "text/css" in css.headers["Content-Type"]
        assert css.headers.get("Content-Encoding") == "gzip"  # whitenoise's compressed copy

        login = requests.get(f"{base}/admin/login/", headers=host, timeout=5, allow_redirects=False)
        assert login.status_code == 301 and login.headers["Location"].startswith("https://publisher.example.com/")
        secure = requests.get(f"{base}/admin/login/", headers=https, timeout=5, allow_redirects=False)
        assert secure.status_code == 200 and "max-age=31536000" in secure.headers["Strict-Transport-Security"]
        assert requests.get(f"{base}/health/", headers={"Host": "evil.example.com"}, timeout=5,
                            allow_redirects=False).status_code == 400
    finally:
        server.stop()


def test_a_missing_setting_stops_a_command_with_one_line_naming_it(tmp_path):
    env = production_env(tmp_path)
    del env["DJANGO_SECRET_KEY"]
    run = subprocess.run([sys.executable, "manage.py", "publish_packages", "--help"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("manage.py: DJANGO_SECRET_KEY is not set.") and "scripts/manage.sh" in line


def test_scripts_manage_sh_runs_a_command_with_the_settings_of_run_sh(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "KOMBO_", "DATABASE_", "CELERY_", "TEST_", "APP_"))}
    env["APP_VAR_DIR"] = str(tmp_path / "var")
    run = subprocess.run(["bash", "scripts/manage.sh", "publish_packages", "--help"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage: manage.py publish_packages" in run.stdout and "Traceback" not in run.stderr
