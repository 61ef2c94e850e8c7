"""A throwaway PostgreSQL server on loopback for end-to-end tests.

`running_postgres()` initdb's a fresh cluster in a temporary directory, starts it listening only on
127.0.0.1, and removes everything on exit. Tests (and CI) run as root, and PostgreSQL refuses to run
as root, so in that case every server command runs as the `postgres` OS user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg2
from psycopg2 import sql

from tests.e2e.ports import free_port

__all__ = [
    "PostgresNotInstalledError",
    "PostgresServer",
    "PostgresStartError",
    "find_postgres_bindir",
    "running_postgres",
]

HOST = "127.0.0.1"
SUPERUSER = "postgres"
# Debian/Ubuntu install each major version side by side; the PATH only holds pg_wrapper links.
DEBIAN_BINDIR_GLOB = "/usr/lib/postgresql/*/bin"
INSTALL_HINT = "install it with `apt-get install -y postgresql-15`"
# The OS user that owns the cluster when the tests run as root.
SERVER_OS_USER = "postgres"
# Attempts at a free port: another process may take the one we picked before the server binds it.
START_ATTEMPTS = 3


class PostgresNotInstalledError(RuntimeError):
    """No PostgreSQL server binaries were found on this machine."""


class PostgresStartError(RuntimeError):
    """The server could not be initialised or did not accept connections in time."""


@dataclass(frozen=True)
class PostgresServer:
    """A running throwaway PostgreSQL server.

    Attributes:
        host: Loopback address the server listens on (TCP only on this address).
        port: TCP port the server listens on.
    """

    host: str
    port: int
    _superuser_password: str = field(repr=False)

    def create_database(self, name: str, user: str, password: str) -> str:
        """Create a login role and a database owned by it.

        Args:
            name: Name of the database to create.
            user: Name of the role to create; it gets LOGIN and owns the database.
            password: The role's password (stored as a SCRAM-SHA-256 verifier).

        Returns:
            A SQLAlchemy-style URI, `postgresql://user:password@127.0.0.1:port/name`, with each
            part URL-quoted.
        """
        with contextlib.closing(self._connect_as_superuser()) as conn:
            # CREATE DATABASE cannot run inside a transaction block.
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(user)),
                    (password,),
                )
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(name), sql.Identifier(user)
                    )
                )
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@{self.host}:{self.port}/{quote(name, safe='')}"
        )

    def _connect_as_superuser(self, connect_timeout: int = 5) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=SUPERUSER,
            password=self._superuser_password,
            dbname="postgres",
            connect_timeout=connect_timeout,
        )


def find_postgres_bindir() -> Path:
    """Locate the server binaries of the highest installed PostgreSQL major version.

    Returns:
        The directory holding `initdb`, `pg_ctl` and `postgres`.

    Raises:
        PostgresNotInstalledError: No `/usr/lib/postgresql/*/bin/initdb` exists.
    """
    candidates = [Path(p) for p in glob.glob(DEBIAN_BINDIR_GLOB)]
    installed = [p for p in candidates if (p / "initdb").is_file() and (p / "pg_ctl").is_file()]
    if not installed:
        raise PostgresNotInstalledError(
            f"PostgreSQL server binaries not found: no `{DEBIAN_BINDIR_GLOB}/initdb`; "
            f"{INSTALL_HINT}."
        )
    return max(installed, key=_major_version)


@contextlib.contextmanager
def running_postgres(
    bindir: Path | None = None, *, startup_timeout: float = 30.0
) -> Iterator[PostgresServer]:
    """Run a fresh PostgreSQL cluster on 127.0.0.1 for the duration of the block.

    The cluster lives in a new temporary directory (data, unix sockets, server log) that is removed
    on exit, after `pg_ctl stop -m fast`. Both TCP and socket connections need a password
    (scram-sha-256); the superuser `postgres` gets a generated one.

    Args:
        bindir: Directory holding `initdb` and `pg_ctl`. Default: `find_postgres_bindir()`.
        startup_timeout: Seconds to wait for the server to accept connections. Default: 30.

    Yields:
        The running server.

    Raises:
        PostgresNotInstalledError: No PostgreSQL binaries were found.
        PostgresStartError: initdb failed, or the server did not accept connections in time; the
            message includes the server log.
    """
    bindir = bindir or find_postgres_bindir()
    runner = _Runner.for_current_user()
    root = Path(tempfile.mkdtemp(prefix="mlops-pg-", dir=runner.tempdir_base()))
    data_dir = root / "data"
    log_file = root / "server.log"
    password = secrets.token_urlsafe(24)
    initialised = False
    try:
        runner.give(root)
        _initdb(runner, bindir, root, data_dir, password)
        initialised = True
        for attempt in range(1, START_ATTEMPTS + 1):
            port = free_port()
            try:
                _start(runner, bindir, root, data_dir, log_file, port, startup_timeout)
                break
            except PostgresStartError:
                if attempt == START_ATTEMPTS or not _port_was_taken(log_file):
                    raise
        server = PostgresServer(host=HOST, port=port, _superuser_password=password)
        _wait_until_accepting(server, log_file, startup_timeout)
        yield server
    finally:
        if initialised:
            _stop(runner, bindir, root, data_dir)
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class _Runner:
    """Runs server commands as the OS user that owns the cluster."""

    prefix: tuple[str, ...]
    uid: int | None
    gid: int | None

    @classmethod
    def for_current_user(cls) -> _Runner:
        if os.geteuid() != 0:
            return cls(prefix=(), uid=None, gid=None)
        try:
            entry = pwd.getpwnam(SERVER_OS_USER)
        except KeyError:
            raise PostgresNotInstalledError(
                f"Running as root, but there is no `{SERVER_OS_USER}` OS user to run PostgreSQL "
                f"as (it refuses to run as root); {INSTALL_HINT}, which creates the user."
            ) from None
        if shutil.which("runuser"):
            prefix: tuple[str, ...] = ("runuser", "-u", SERVER_OS_USER, "--")
        else:
            prefix = (
                "setpriv",
                f"--reuid={entry.pw_uid}",
                f"--regid={entry.pw_gid}",
                "--init-groups",
                "--",
            )
        return cls(prefix=prefix, uid=entry.pw_uid, gid=entry.pw_gid)

    def tempdir_base(self) -> str | None:
        """A parent for the cluster directory that the server user can traverse."""
        base = tempfile.gettempdir()
        if self.uid is None:
            return base
        # $TMPDIR may point somewhere private to root (e.g. under /root).
        reachable = all(os.stat(p).st_mode & 0o001 for p in [base, *map(str, Path(base).parents)])
        return base if reachable else "/tmp"

    def give(self, path: Path) -> None:
        """Hand `path` over to the server user."""
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def run(self, args: Sequence[str], cwd: Path, what: str) -> str:
        """Run a command; raise `PostgresStartError` with its output if it fails."""
        completed = subprocess.run(
            [*self.prefix, *args],
            cwd=cwd,  # the server user may not be able to enter the caller's directory
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise PostgresStartError(
                f"{what} failed (exit {completed.returncode}): {shlex.join(args)}\n"
                f"{completed.stdout}{completed.stderr}"
            )
        return completed.stdout


def _initdb(runner: _Runner, bindir: Path, root: Path, data_dir: Path, password: str) -> None:
    pwfile = root / "superuser-password"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    runner.give(pwfile)
    try:
        runner.run(
            [
                str(bindir / "initdb"),
                f"--pgdata={data_dir}",
                f"--username={SUPERUSER}",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                # The caller's locale may not be installed; C also makes initdb faster.
                "--locale=C",
                # Throwaway data: skipping fsync saves seconds.
                "--no-sync",
                "--no-instructions",
            ],
            cwd=root,
            what="initdb",
        )
    finally:
        pwfile.unlink(missing_ok=True)


def _start(
    runner: _Runner,
    bindir: Path,
    root: Path,
    data_dir: Path,
    log_file: Path,
    port: int,
    timeout: float,
) -> None:
    options = [
        "-c", f"listen_addresses={HOST}",
        "-c", f"port={port}",
        "-c", f"unix_socket_directories={root}",
        # Throwaway data: durability only costs time.
        "-c", "fsync=off",
        "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off",
    ]  # fmt: skip
    try:
        runner.run(
            [
                str(bindir / "pg_ctl"),
                "start",
                f"--pgdata={data_dir}",
                f"--log={log_file}",
                "--wait",
                f"--timeout={max(1, round(timeout))}",
                # pg_ctl hands the options to /bin/sh.
                f"--options={shlex.join(options)}",
            ],
            cwd=root,
            what="pg_ctl start",
        )
    except PostgresStartError as exc:
        raise PostgresStartError(
            f"{exc}\nServer log ({log_file}):\n{_read_log(log_file)}"
        ) from None


def _wait_until_accepting(server: PostgresServer, log_file: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with contextlib.closing(server._connect_as_superuser(connect_timeout=2)):
                return
        except psycopg2.OperationalError as exc:
            if time.monotonic() >= deadline:
                raise PostgresStartError(
                    f"PostgreSQL on {server.host}:{server.port} did not accept connections within "
                    f"{timeout:g}s; last error: {str(exc).strip()}\n"
                    f"Server log ({log_file}):\n{_read_log(log_file)}"
                ) from None
        time.sleep(0.1)


def _stop(runner: _Runner, bindir: Path, root: Path, data_dir: Path) -> None:
    status = [str(bindir / "pg_ctl"), "status", f"--pgdata={data_dir}"]
    try:
        runner.run(status, cwd=root, what="pg_ctl status")
    except PostgresStartError:
        return  # never started, or already gone (exit 3: no server running)
    try:
        runner.run(
            [str(bindir / "pg_ctl"), "stop", f"--pgdata={data_dir}", "--mode=fast", "--wait"],
            cwd=root,
            what="pg_ctl stop",
        )
    except PostgresStartError:
        # Never leave a postmaster behind; it would hold the port and the deleted directory.
        runner.run(
            [str(bindir / "pg_ctl"), "stop", f"--pgdata={data_dir}", "--mode=immediate", "--wait"],
            cwd=root,
            what="pg_ctl stop -m immediate",
        )


def _port_was_taken(log_file: Path) -> bool:
    return "Address already in use" in _read_log(log_file)


def _read_log(log_file: Path) -> str:
    try:
        return log_file.read_text(errors="replace")
    except OSError as exc:
        return f"<unreadable: {exc}>"


def _clean_env() -> dict[str, str]:
    # PGPORT, PGHOST, PGDATA and friends from the caller's shell would override our settings.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _major_version(bindir: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin; compare numerically so 15 > 9.6.
    return tuple(int(n) for n in re.findall(r"\d+", bindir.parent.name))
