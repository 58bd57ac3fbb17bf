"""Shared fixtures: a throwaway cluster for the session, a fresh database per test (cloned
from a template that has the extension), and a scripted OpenAI-compatible LLM server."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests" / "python"), str(ROOT / "python")]

from pgcluster import Cluster  # noqa: E402
from scripted_llm import ScriptedLLM  # noqa: E402

_db_names = itertools.count(1)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    c = Cluster().start()
    try:
        c.createdb("pgagent_template")
        with psycopg.connect(c.dsn("pgagent_template"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pgagent CASCADE")
            # sql tools run as pgagent_sandbox: let it read (and, in the always rolled back
            # subtransaction, write) the tables the tests create in public
            conn.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT ON TABLES TO pgagent_sandbox")
            # the key-encryption key for pgagent.secret ($PGDATA/pgagent.kek, see docs/security.md)
            datadir = conn.execute("SHOW data_directory").fetchone()[0]
            conn.execute(f"COPY (SELECT 'test-kek-0123456789abcdef0123456789') TO '{datadir}/pgagent.kek'")
        yield c
    finally:
        c.stop(keep=bool(os.environ.get("PGAGENT_KEEP_CLUSTER")))


@pytest.fixture
def dbname(cluster: Cluster) -> str:
    name = f"t{os.getpid()}_{next(_db_names)}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE pgagent_template')
    return name


@pytest.fixture
def dsn(cluster: Cluster, dbname: str) -> str:
    return cluster.dsn(dbname)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server
