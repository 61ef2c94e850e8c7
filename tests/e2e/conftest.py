"""Fixtures for end-to-end tests that run real workloads on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.postgres import (
    PostgresNotInstalledError,
    PostgresServer,
    find_postgres_bindir,
    running_postgres,
)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server on 127.0.0.1 shared by the session; each test creates its own database.

    Skipped only when PostgreSQL is not installed (`make` installs it in CI).
    """
    try:
        bindir = find_postgres_bindir()
    except PostgresNotInstalledError as exc:
        pytest.skip(str(exc))
    with running_postgres(bindir) as server:
        yield server
