"""`make install` must never overwrite pgAdmin's pgAgent (an unrelated extension of the same name)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _check(destdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", "-C", str(ROOT), "check-not-pgadmin", f"DESTDIR={destdir}"],
                          capture_output=True, text=True)


def _control(destdir: Path) -> Path:
    sharedir = subprocess.run(["make", "-s", "-C", str(ROOT), "--no-print-directory", "print-sharedir"],
                              capture_output=True, text=True, check=True).stdout.strip()
    path = destdir / sharedir.lstrip("/") / "extension" / "pgagent.control"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_refuses_to_overwrite_pgadmins_pgagent(tmp_path):
    ctl = _control(tmp_path)
    ctl.write_text("# pgAgent - a job scheduler for PostgreSQL\ncomment = 'A PostgreSQL job scheduler'\n"
                   "default_version = '4.2'\n")
    r = _check(tmp_path)
    assert r.returncode != 0
    assert "refusing to overwrite" in r.stdout + r.stderr and "pgAdmin" in r.stdout + r.stderr
    assert ctl.read_text().startswith("# pgAgent - a job scheduler")  # untouched


def test_installs_over_its_own_control_file_or_none(tmp_path):
    assert _check(tmp_path).returncode == 0  # nothing installed yet
    ctl = _control(tmp_path)
    ctl.write_text((ROOT / "pgagent.control").read_text())
    assert _check(tmp_path).returncode == 0
