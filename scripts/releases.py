"""Install an earlier pgagent release from git history beside this one, for the upgrade test and
the benchmark's same-run comparison: its SQL script (concatenated from that commit's sql/ files
as its Makefile did) goes into PostgreSQL's extension directory and its pgagent_core into
/usr/local/lib/pgagent_core/<version>. The script is removed again afterwards, so users never
see it; the Python directory is kept if it was there before."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
PG_CONFIG = "/usr/lib/postgresql/15/bin/pg_config"
PYLIBROOT = Path("/usr/local/lib/pgagent_core")
PREVIOUS = ("0.1.1", "735151c")   # (version, commit) of the release before this one
RELEASES = (("0.1.0", "30ee2d7"), ("0.1.1", "735151c"))   # every earlier release, oldest first


class Unavailable(RuntimeError):
    """The release cannot be installed here (no git history, or no write access)."""


def git(*args: str) -> bytes:
    """Output of ``git -C <project> args...``; CalledProcessError on failure."""
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True).stdout


def extension_dir() -> Path:
    """PostgreSQL 15's extension directory (``pg_config --sharedir``/extension)."""
    return Path(subprocess.run([PG_CONFIG, "--sharedir"], check=True, capture_output=True, text=True)
                .stdout.strip()) / "extension"


def release_script(commit: str, version: str) -> str:
    """The full install script of the release at ``commit``, as its Makefile built it."""
    names = sorted(n for n in git("ls-tree", "--name-only", f"{commit}:sql").decode().split()
                   if re.fullmatch(r"[0-9][0-9]_.*\.sql", n))
    out = ["-- generated from sql/*.sql by make; do not edit",
           '\\echo Use "CREATE EXTENSION pgagent" to load this file. \\quit']
    for n in names:
        out += ["", f"-- ---- sql/{n}", git("show", f"{commit}:sql/{n}").decode().rstrip("\n")]
    script = "\n".join(out) + "\n"
    return script.replace("@PYLIBDIR@", str(PYLIBROOT / version)).replace("@EXTVERSION@", version)


@contextmanager
def installed(version: str = PREVIOUS[0], commit: str = PREVIOUS[1]) -> Iterator[str]:
    """Make ``CREATE EXTENSION pgagent VERSION '<version>'`` possible for the duration of the
    block; yields the version. Raises Unavailable without the git history or write access."""
    try:
        git("cat-file", "-e", f"{commit}^{{commit}}")
    except (OSError, subprocess.CalledProcessError):
        raise Unavailable(f"needs the git history (commit {commit} of release {version})") from None
    ext = extension_dir()
    if not (os.access(ext, os.W_OK) and os.access(PYLIBROOT, os.W_OK)):
        raise Unavailable(f"needs write access to {ext} and {PYLIBROOT} (run as root)")
    pydir = PYLIBROOT / version
    had_pydir = pydir.exists()
    shutil.rmtree(pydir / "pgagent_core", ignore_errors=True)
    pydir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(git("archive", "--format=tar", commit, "python/pgagent_core"))) as tar:
        for m in tar.getmembers():
            m.name = m.name.removeprefix("python/")
            tar.extract(m, pydir, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    subprocess.run(["chmod", "-R", "a+rX", str(pydir)], check=True)
    script = ext / f"pgagent--{version}.sql"
    script.write_text(release_script(commit, version))
    try:
        yield version
    finally:
        script.unlink(missing_ok=True)
        if not had_pydir:
            shutil.rmtree(pydir, ignore_errors=True)
