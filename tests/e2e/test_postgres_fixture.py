"""The `postgres` fixture gives each test a real database reachable by URI."""

from __future__ import annotations

import contextlib
import secrets
from urllib.parse import urlsplit

import psycopg2
import pytest

from tests.e2e.postgres import PostgresServer

pytestmark = pytest.mark.e2e


def test_created_database_accepts_its_owner_and_round_trips_a_row(
    postgres: PostgresServer,
) -> None:
    # Characters that must be URL-quoted prove the URI is usable as returned.
    password = "p@ss:/w%rd " + secrets.token_hex(4)
    uri = postgres.create_database("roundtrip", user="roundtrip_owner", password=password)

    parts = urlsplit(uri)
    assert (parts.scheme, parts.hostname, parts.port, parts.path) == (
        "postgresql",
        "127.0.0.1",
        postgres.port,
        "/roundtrip",
    )
    with contextlib.closing(psycopg2.connect(uri)) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE models (name text PRIMARY KEY, version integer NOT NULL)")
            cur.execute("INSERT INTO models VALUES (%s, %s)", ("churn", 3))
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("SELECT name, version, current_user FROM models")
            assert cur.fetchall() == [("churn", 3, "roundtrip_owner")]


def test_wrong_password_is_rejected(postgres: PostgresServer) -> None:
    uri = postgres.create_database("guarded", user="guarded_owner", password="right-password")
    wrong = uri.replace("right-password", "wrong-password")

    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(wrong, connect_timeout=5)
