"""Real Redis, ClickHouse and PostgreSQL servers on 127.0.0.1, for tests and local runs.

Each server is a child process of the Python process that starts it, keeps all its files
under the ``data_dir`` it is given, and listens on loopback only. Stopping and starting a
server again reuses its data and its ports, so tests can take a server down and bring it back.

Children never outlive their parent: every server is started through ``setpriv
--pdeathsig``, in a session of its own, and an ``atexit`` hook stops whatever is still
running. The kernel sends the death signal (the server's graceful stop signal) when the
*thread* that started the server exits, even on SIGKILL: start servers from the main thread,
or from one that lives as long as they should.

The binaries come from Debian (``support-files/dev/install-system-deps.sh``). The Redis and
ClickHouse configuration lives in ``support-files/dev/`` and is shared with
``support-files/dev/run-server.sh``, which runs the same servers in the foreground for
``make run``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import stat
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar
from xml.sax.saxutils import escape as xml_escape

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_DIR = REPO_ROOT / "support-files" / "dev"
REDIS_CONF = DEV_DIR / "redis.conf"
CLICKHOUSE_CONFIG_TEMPLATE = DEV_DIR / "clickhouse-config.xml.template"
CLICKHOUSE_USERS = DEV_DIR / "clickhouse-users.xml"
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGRES_OS_USER = "postgres"

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
_POLL_INTERVAL = 0.05
# Loopback must never go through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_LOG_TAIL_LINES = 40


class ServerError(RuntimeError):
    """A server failed to start or to stop; the message ends with its log tail."""


# Ports handed out below the kernel's ephemeral range: a port from that range can be given, between
# the moment it is picked and the moment its server binds it, to any outgoing connection as its
# local port (a client of another server started meanwhile), and the server then fails to start.
_PORT_FLOOR = 10_000
_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, that no outgoing connection can
    take before its server binds it (it is below the ephemeral range), and that this process has
    not handed out before (two servers picked before either starts do not get the same one)."""
    low, _high = _ephemeral_range()
    if low - _PORT_FLOOR >= 1_000:
        for _ in range(1_000):
            port = random.randrange(_PORT_FLOOR, low)
            if port not in _handed_out and _port_is_free(port):
                _handed_out.add(port)
                return port
    while True:  # a machine whose ephemeral range leaves no room below it
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _free_port_other_than(port: int) -> int:
    while (other := free_port()) == port:
        pass
    return other


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _tail(paths: Iterable[Path], lines: int = _LOG_TAIL_LINES) -> str:
    parts = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        tail = "\n".join(text.splitlines()[-lines:])
        parts.append(f"--- {path} ---\n{tail}")
    return "\n".join(parts) or "(no log output)"


def render_clickhouse_config(data_dir: Path, tcp_port: int, http_port: int) -> str:
    """The ClickHouse config.xml for this data directory and these ports.

    ``support-files/dev/run-server.sh`` renders the same template the same way.
    """
    text = CLICKHOUSE_CONFIG_TEMPLATE.read_text()
    return (
        text.replace("@DATA_DIR@", xml_escape(str(data_dir)))
        .replace("@TCP_PORT@", str(tcp_port))
        .replace("@HTTP_PORT@", str(http_port))
    )


class _Server:
    """A server binary run as a child process with its data under ``data_dir``.

    Subclasses say how to prepare the data directory, which command to run, which signal
    stops the server gracefully and how to tell it answers queries.
    """

    name: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self._auto_ports = port is None
        self._port = port if port is not None else free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False
        #: Seconds the last start took until the server answered.
        self.start_seconds: float | None = None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {LOOPBACK}:{self._port} {self.data_dir} {state}>"

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        return self._port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- to override -------------------------------------------------------------------

    def _prepare(self) -> None:
        """Create or update the files the server needs before each start."""
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _setpriv_options(self) -> list[str]:
        """Extra ``setpriv`` options, e.g. to run as another user."""
        return []

    def _log_paths(self) -> list[Path]:
        return [self._stdout_path]

    def _answers(self) -> bool:
        raise NotImplementedError

    def _pick_new_ports(self) -> None:
        self._port = free_port()

    def _ports(self) -> list[int]:
        return [self._port]

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def _stdout_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server and wait until it answers; a no-op if it is running.

        With ports picked here (``port=None``), a first start that fails because another
        process took a port in the meantime is retried on new ports. Later starts always
        reuse the ports of the first one.
        """
        if self.is_running():
            return
        attempts = 3 if self._auto_ports and not self._started_once else 1
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
            except ServerError:
                if attempt == attempts or not self.ports_taken():
                    raise
                self._pick_new_ports()
            else:
                self._started_once = True
                return

    def ports_taken(self) -> bool:
        """Whether another process holds one of this server's ports (while it is not running)."""
        return not all(_port_is_free(port) for port in self._ports())

    def _start_once(self, timeout: float) -> None:
        self._prepare()
        command = [
            "setpriv",
            f"--pdeathsig={self.stop_signal.name}",
            *self._setpriv_options(),
            "--",
            *self._command(),
        ]
        with self._stdout_path.open("ab") as out:
            self._proc = subprocess.Popen(
                command,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal reaches pytest, which then stops
                # the servers in order, and kill() can signal the whole group.
                start_new_session=True,
            )
        _RUNNING.add(self)
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._forget()
                raise ServerError(
                    f"{self.name} exited with code {self._proc.returncode} on start\n" + _tail(self._log_paths())
                )
            if self._answers():
                self.start_seconds = time.monotonic() - started
                return
            time.sleep(_POLL_INTERVAL)
        self.kill()
        raise ServerError(
            f"{self.name} did not answer on port {self._port} within {timeout:.0f}s\n" + _tail(self._log_paths())
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop gracefully and wait; SIGKILL if the server is still up after ``timeout``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise ServerError(
                    f"{self.name} did not stop within {timeout:.0f}s and was killed\n" + _tail(self._log_paths())
                ) from None
        self._forget()

    def kill(self) -> None:
        """SIGKILL the server and its children, as a crash would (no shutdown, no flush)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # Postgres backends each run in a session of their own, so the process group
            # misses them. Freeze the server so it forks no more, then kill its children
            # too: a new postmaster refuses to start while old ones hold shared memory.
            os.killpg(proc.pid, signal.SIGSTOP)
            children = _children(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            proc.wait()
            _wait_gone(children)
        self._forget()

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        self.stop()
        self.start(timeout)

    def _forget(self) -> None:
        _RUNNING.discard(self)


_RUNNING: set[_Server] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        with contextlib.suppress(ServerError):
            server.stop(timeout=10)


class RedisServer(_Server):
    """Redis 7 with the append-only file on, so queued messages survive a restart."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self._port}/0"

    def _command(self) -> list[str]:
        return [
            "redis-server",
            str(REDIS_CONF),
            "--port",
            str(self._port),
            "--dir",
            str(self.data_dir),
        ]

    def _answers(self) -> bool:
        # While Redis replays its append-only file it answers PING with -LOADING.
        try:
            with socket.create_connection((LOOPBACK, self._port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class ClickHouseServer(_Server):
    """ClickHouse 18.16 (Debian's), run as the current user with a generated config.

    Files under ``data_dir``: ``config.xml`` and ``users.xml`` (rendered on every start),
    ``data/`` (the server's ``path``), ``tmp/``, ``user_files/``, ``format_schemas/`` and
    ``log/``. The caller chooses and creates its database.
    """

    name = "clickhouse"

    def __init__(self, data_dir: Path, port: int | None = None, http_port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self._auto_ports = port is None and http_port is None
        self._http_port = http_port if http_port is not None else _free_port_other_than(self._port)

    @property
    def http_port(self) -> int:
        return self._http_port

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self._http_port}/"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "config.xml"

    def _prepare(self) -> None:
        super()._prepare()
        for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
            (self.data_dir / sub).mkdir(exist_ok=True)
        self.config_path.write_text(render_clickhouse_config(self.data_dir, self._port, self._http_port))
        shutil.copyfile(CLICKHOUSE_USERS, self.data_dir / "users.xml")

    def _command(self) -> list[str]:
        return ["clickhouse-server", f"--config-file={self.config_path}"]

    def _log_paths(self) -> list[Path]:
        log_dir = self.data_dir / "log"
        return [
            self._stdout_path,
            log_dir / "clickhouse-server.err.log",
            log_dir / "clickhouse-server.log",
        ]

    def _ports(self) -> list[int]:
        return [self._port, self._http_port]

    def _pick_new_ports(self) -> None:
        self._port = free_port()
        self._http_port = _free_port_other_than(self._port)

    def fault_lines(self) -> list[str]:
        """The lines of its error log that report a fatal signal (a segfault): the server may go
        on answering while the thread that crashed still holds a table's locks."""
        try:
            text = (self.data_dir / "log" / "clickhouse-server.err.log").read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if "Received signal" in line or "BaseDaemon: 0. " in line]

    def _answers(self) -> bool:
        # Both listeners open together once all tables are loaded; a query over HTTP
        # proves the server executes queries, the TCP connect that the native port is up.
        try:
            with _NO_PROXY.open(self.http_url + "?query=SELECT%201", timeout=1) as resp:
                if resp.read().strip() != b"1":
                    return False
            with socket.create_connection((LOOPBACK, self._port), timeout=1):
                return True
        except (OSError, urllib.error.URLError):
            return False


class PostgresServer(_Server):
    """PostgreSQL 15 with trust authentication on loopback, tuned for speed, not safety.

    ``initdb`` and ``postgres`` refuse to run as root, so when the caller is root they run
    as the ``postgres`` OS user and ``data_dir`` is handed to that user. The cluster lives in
    ``data_dir/pgdata``, its log in ``data_dir/postgres.log``. The superuser ``postgres`` may
    create databases (pytest-django makes ``test_*`` ones).
    """

    name = "postgres"
    # SIGTERM ("smart" shutdown) waits for every client to disconnect; SIGINT ("fast")
    # disconnects them and still shuts down cleanly.
    stop_signal = signal.SIGINT

    user = "postgres"
    dbname = "postgres"

    @property
    def url(self) -> str:
        return self.database_url(self.dbname)

    def database_url(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{LOOPBACK}:{self._port}/{dbname}"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _setpriv_options(self) -> list[str]:
        if not self._as_root:
            return []
        options = [
            f"--reuid={POSTGRES_OS_USER}",
            f"--regid={POSTGRES_OS_USER}",
            "--init-groups",
        ]
        if not _reachable_by(self.data_dir.parent, pwd.getpwnam(POSTGRES_OS_USER)):
            # The data directory sits below a directory the postgres user cannot enter
            # (pytest's /tmp/pytest-of-root is 0700). Rather than loosen permissions the
            # caller chose, let these processes traverse directories regardless of mode.
            options += [
                "--inh-caps=+dac_read_search",
                "--ambient-caps=+dac_read_search",
            ]
        return options

    def _prepare(self) -> None:
        super()._prepare()
        self._give_to_postgres_user(self.data_dir)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        conf = self.pgdata / "bklog.conf"
        conf.write_text(self._settings())
        self._give_to_postgres_user(conf)

    def _give_to_postgres_user(self, path: Path) -> None:
        if self._as_root:
            owner = pwd.getpwnam(POSTGRES_OS_USER)
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def _initdb(self) -> None:
        command = [
            "setpriv",
            *self._setpriv_options(),
            "--",
            str(POSTGRES_BIN / "initdb"),
            f"--pgdata={self.pgdata}",
            f"--username={self.user}",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            # Test clusters are thrown away; skipping the fsync of every file saves seconds.
            "--no-sync",
            "--no-instructions",
        ]
        result = subprocess.run(
            command,
            check=False,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise ServerError(f"initdb failed with code {result.returncode}\n{output}")
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("\n# Written on every start by devservers/servers.py.\n")
            conf.write("include_if_exists = 'bklog.conf'\n")

    def _settings(self) -> str:
        # The socket path must fit in sun_path (107 bytes); long temporary paths would make
        # postgres refuse to start, so fall back to TCP only.
        socket_dir = str(self.pgdata)
        if len(f"{socket_dir}/.s.PGSQL.{self._port}") > 100:
            socket_dir = ""
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(self._port),
            "unix_socket_directories": socket_dir,
            "max_connections": "300",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
        }
        lines = [f"{key} = '{value}'" for key, value in settings.items()]
        return "\n".join(lines) + "\n"

    def _command(self) -> list[str]:
        return [str(POSTGRES_BIN / "postgres"), "-D", str(self.pgdata)]

    def _answers(self) -> bool:
        return _postgres_ready_for_query(self._port, self.user, self.dbname)


def _children(pid: int) -> list[int]:
    """The direct children of ``pid``, read from /proc."""
    children = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name, in parentheses, may contain spaces: split after it.
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat_file.parent.name))
    return children


def _wait_gone(pids: Iterable[int], timeout: float = 10.0) -> None:
    """Wait until none of ``pids`` runs any more (exited, or a zombie)."""
    deadline = time.monotonic() + timeout
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                state = "X"
            if state in ("Z", "X"):
                pending.discard(pid)
        if pending:
            time.sleep(_POLL_INTERVAL)


def _reachable_by(directory: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may traverse every directory from / down to ``directory``.

    Reads mode bits only (no ACLs): enough for the temporary directories tests use.
    """
    groups = {user.pw_gid, *os.getgrouplist(user.pw_name, user.pw_gid)}
    for path in [directory, *directory.parents]:
        try:
            st = path.stat()
        except OSError:
            return False
        if st.st_uid == user.pw_uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _postgres_ready_for_query(port: int, user: str, dbname: str) -> bool:
    """Log in over the wire protocol and wait for ReadyForQuery.

    A postmaster that is still starting or recovering accepts the TCP connection but
    answers with an error ("the database system is starting up"), so a plain connect is
    not enough.
    """
    params = f"user\0{user}\0database\0{dbname}\0\0".encode()
    body = struct.pack("!I", 3 << 16) + params  # protocol 3.0
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
            sock.sendall(struct.pack("!I", len(body) + 4) + body)
            reader = sock.makefile("rb")
            while True:
                header = reader.read(5)
                if len(header) < 5:
                    return False
                kind, length = header[:1], struct.unpack("!I", header[1:])[0]
                payload = reader.read(length - 4)
                if kind == b"E":
                    return False
                if kind == b"R" and struct.unpack("!I", payload[:4])[0] != 0:
                    return False  # asks for a password: not the trust setup we wrote
                if kind == b"Z":
                    sock.sendall(b"X" + struct.pack("!I", 4))  # Terminate
                    return True
    except OSError:
        return False
