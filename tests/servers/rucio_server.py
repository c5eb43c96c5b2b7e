"""A real Rucio server (the PyPI ``rucio`` wheel under gunicorn) on 127.0.0.1 for tests.

The server lives in its own venv under ``<repo>/.cache/rucio-server/venv`` so the
``rucio-clients`` that cwlbridge ships with is exercised independently of the server's
copy.  Each test session gets its own base directory (configs, SQLite database, RSE
storage, tokens, logs); only the venv is shared between runs.

Layout of a base directory::

    etc/   alembic.ini  rucio-server.cfg  rucio-client-root.cfg  rucio-client-user.cfg
    bin/   bootstrap_db.py  provision.py      (run with the server venv's python)
    log/   server.log
    rse/<RSE>/                               (the POSIX ``file`` protocol prefix)
    tokens/<account>/token
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

RUCIO_VERSION = "41.5.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_CACHE = REPO_ROOT / ".cache" / "rucio-server"
SERVER_VENV = SERVER_CACHE / "venv"
# Written only after a complete install, so a half-finished venv is never reused.
INSTALLED_MARKER = f".cwlbridge-installed-rucio-{RUCIO_VERSION}"

RSE = "LOCAL_SCRATCHDISK"
ACCOUNT = "jdoe"
PASSWORD = "jdoe-secret"
# A second ordinary account, so tests have a scope that exists but belongs to someone else.
OTHER_ACCOUNT = "jsmith"
ROOT_IDENTITY = "ddmlab"
ROOT_PASSWORD = "secret"
ACCOUNT_LIMIT_BYTES = 10 * 1024**4


class ServerUnavailable(Exception):
    """The server cannot be set up on this machine (for example PyPI is unreachable)."""


@dataclass
class InstallReport:
    """What ensure_server_venv did: the interpreter and how long installing took."""

    python: Path
    installed: bool
    seconds: float


@dataclass
class RucioServer:
    """A running server plus the paths and names a test needs to talk to it."""

    url: str
    base_dir: Path
    client_config: Path
    root_config: Path
    server_config: Path
    rse: str
    rse_prefix: Path
    scope: str
    account: str
    other_scope: str
    process: subprocess.Popen[bytes]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.base_dir / "log" / "server.log"

    def env(self) -> dict[str, str]:
        """Environment variables that point a Rucio client at this server as the test user."""
        return {
            "RUCIO_CONFIG": str(self.client_config),
            "RUCIO_ACCOUNT": self.account,
            "RUCIO_AUTH_TYPE": "userpass",
        }

    def root_env(self) -> dict[str, str]:
        """Like env(), but for the root account (provisioning, inspection)."""
        return {
            "RUCIO_CONFIG": str(self.root_config),
            "RUCIO_ACCOUNT": "root",
            "RUCIO_AUTH_TYPE": "userpass",
        }

    def run_as_root(self, code: str, *args: str) -> str:
        """Run Python code with the server venv as the root account; return its stdout."""
        return _run_venv_python(code, list(args), {**os.environ, **self.root_env()})

    def stop(self) -> None:
        """Stop exactly the gunicorn master this object started (it stops its own workers)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def _venv_python(venv: Path = SERVER_VENV) -> Path:
    return venv / "bin" / "python"


def _run_venv_python(code: str, args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    proc = subprocess.run(
        [str(_venv_python()), "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"server-venv python failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def _venv_is_complete(venv: Path) -> bool:
    return (venv / INSTALLED_MARKER).is_file() and (venv / "bin" / "gunicorn").is_file()


def index_unreachable(package: str = "rucio", what: str = "the server", timeout: float = 10) -> str | None:
    """None when the package index pip will use answers for ``package``, otherwise why not."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/")
    try:
        with urllib.request.urlopen(f"{index}/{package}/", timeout=timeout) as reply:
            reply.read(1)
    except (urllib.error.URLError, OSError) as exc:
        return f"the package index {index} is unreachable ({exc}), so {what} cannot be installed"
    return None


def ensure_server_venv(venv: Path = SERVER_VENV) -> InstallReport:
    """Create the server venv with rucio, rucio-clients and gunicorn unless it is already there.

    A file lock serialises concurrent test sessions; raises ServerUnavailable when the
    packages cannot be installed (typically: no route to PyPI).
    """
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.parent / "install.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _venv_is_complete(venv):
            return InstallReport(_venv_python(venv), installed=False, seconds=0.0)
        reason = index_unreachable()
        if reason:
            raise ServerUnavailable(reason)
        started = time.monotonic()
        if not _venv_python(venv).exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(_venv_python(venv)), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        proc = subprocess.run(
            [*pip, f"rucio=={RUCIO_VERSION}", f"rucio-clients=={RUCIO_VERSION}", "gunicorn"],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise ServerUnavailable(f"pip install of the Rucio server failed:\n{proc.stderr[-2000:]}")
        version = subprocess.run(
            [str(_venv_python(venv)), "-c", "import rucio.version as v; print(v.version_string())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if version != RUCIO_VERSION:
            raise ServerUnavailable(f"server venv has rucio {version}, expected {RUCIO_VERSION}")
        (venv / INSTALLED_MARKER).write_text(version + "\n")
        return InstallReport(_venv_python(venv), installed=True, seconds=time.monotonic() - started)


_ALEMBIC_LOGGING = """
[loggers]
keys = root,sqlalchemy,alembic
[handlers]
keys = console
[formatters]
keys = generic
[logger_root]
level = WARN
handlers = console
qualname =
[logger_sqlalchemy]
level = WARN
handlers =
qualname = sqlalchemy.engine
[logger_alembic]
level = WARN
handlers =
qualname = alembic
[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic
[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

_BOOTSTRAP = """
from rucio.db.sqla.util import build_database, create_base_vo, create_root_account
build_database()
create_base_vo()
create_root_account()
"""

# Idempotent so it could be re-run against a live server; Duplicate means "already there".
_PROVISION = """
import sys
from rucio.client import Client
from rucio.common.exception import Duplicate

rse, prefix, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
users = [(sys.argv[i], sys.argv[i + 1]) for i in range(4, len(sys.argv), 2)]
c = Client()

def once(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Duplicate:
        pass

once(c.add_rse, rse)
once(c.add_protocol, rse, {
    'scheme': 'file', 'hostname': 'localhost', 'port': 0, 'prefix': prefix,
    'impl': 'rucio.rse.protocols.posix.Default',
    'domains': {
        'lan': {'read': 1, 'write': 1, 'delete': 1},
        'wan': {'read': 1, 'write': 1, 'delete': 1,
                'third_party_copy_read': 1, 'third_party_copy_write': 1}}})
c.add_rse_attribute(rse, 'type', 'SCRATCHDISK')
for user, password in users:
    once(c.add_account, user, 'USER', f'{user}@localhost')
    once(c.add_identity, user, user, 'userpass', f'{user}@localhost', default=True,
         password=password)
    once(c.add_scope, user, f'user.{user}')
    c.set_local_account_limit(user, rse, limit)
c.set_local_account_limit('root', rse, limit)
"""


def _site_packages_rucio() -> Path:
    out = subprocess.run(
        [str(_venv_python()), "-c", "import os, rucio; print(os.path.dirname(rucio.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def _client_config(url: str, base: Path, identity: str, password: str, account: str) -> str:
    # No [database] section: with one, rucio believes it runs inside the server.
    return textwrap.dedent(
        f"""\
        [common]
        loglevel = WARNING

        [client]
        rucio_host = {url}
        auth_host = {url}
        auth_type = userpass
        username = {identity}
        password = {password}
        account = {account}
        request_retries = 3
        auth_token_file_path = {base}/tokens/{account}/token
        """
    )


def write_configs(base: Path, url: str) -> dict[str, Path]:
    """Write alembic.ini, the server config and the two client configs under base/etc."""
    for sub in ("etc", "log", "tokens", f"rse/{RSE}"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{base / 'rucio.db'}"
    etc = base / "etc"
    alembic = etc / "alembic.ini"
    alembic.write_text(
        "[alembic]\n"
        f"script_location = {_site_packages_rucio() / 'db' / 'sqla' / 'migrate_repo'}\n"
        f"sqlalchemy.url = {db_url}\n" + _ALEMBIC_LOGGING
    )
    server_cfg = etc / "rucio-server.cfg"
    server_cfg.write_text(
        textwrap.dedent(
            f"""\
            [common]
            logdir = {base / "log"}
            loglevel = INFO

            [database]
            default = {db_url}
            pool_reset_on_return = rollback
            echo = 0

            [bootstrap]
            userpass_identity = {ROOT_IDENTITY}
            userpass_pwd = {ROOT_PASSWORD}
            userpass_email = root@localhost

            [alembic]
            cfg = {alembic}
            """
        )
    )
    root_cfg = etc / "rucio-client-root.cfg"
    root_cfg.write_text(_client_config(url, base, ROOT_IDENTITY, ROOT_PASSWORD, "root"))
    user_cfg = etc / "rucio-client-user.cfg"
    user_cfg.write_text(_client_config(url, base, ACCOUNT, PASSWORD, ACCOUNT))
    return {"server": server_cfg, "root": root_cfg, "user": user_cfg}


def _ping(url: str) -> dict[str, str] | None:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as reply:
            answer: dict[str, str] = json.loads(reply.read())
            return answer
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _listening_socket() -> socket.socket:
    """A socket bound to a free loopback port; gunicorn inherits it, so no port race."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def start_server(base: Path, *, ready_timeout: float = 60) -> RucioServer:
    """Write configs, bootstrap the database, start gunicorn and provision the test accounts.

    Expects ensure_server_venv() to have run.  The caller owns the returned server and must
    call stop() on it.
    """
    timings: dict[str, float] = {}
    sock = _listening_socket()
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    configs = write_configs(base, url)
    server_env = {**os.environ, "RUCIO_CONFIG": str(configs["server"])}
    for name in ("RUCIO_HOME", "RUCIO_ACCOUNT", "RUCIO_AUTH_TYPE", "VIRTUAL_ENV"):
        server_env.pop(name, None)

    started = time.monotonic()
    _run_venv_python(_BOOTSTRAP, [], server_env)
    timings["bootstrap"] = time.monotonic() - started

    started = time.monotonic()
    log = open(base / "log" / "server.log", "ab")  # noqa: SIM115 - kept open for the child
    try:
        process = subprocess.Popen(
            [
                str(SERVER_VENV / "bin" / "gunicorn"),
                "-w",
                "1",
                "-k",
                "sync",
                "-b",
                f"fd://{sock.fileno()}",
                "--timeout",
                "600",
                "rucio.web.rest.flaskapi.v1.main:application",
            ],
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(sock.fileno(),),
            cwd=base,
        )
    finally:
        log.close()
        sock.close()
    rse_prefix = base / "rse" / RSE
    server = RucioServer(
        url=url,
        base_dir=base,
        client_config=configs["user"],
        root_config=configs["root"],
        server_config=configs["server"],
        rse=RSE,
        rse_prefix=rse_prefix,
        scope=f"user.{ACCOUNT}",
        account=ACCOUNT,
        other_scope=f"user.{OTHER_ACCOUNT}",
        process=process,
        timings=timings,
    )
    try:
        deadline = time.monotonic() + ready_timeout
        while _ping(url) is None:
            if process.poll() is not None:
                raise RuntimeError(
                    f"rucio server exited with {process.returncode}:\n"
                    + server.log_path.read_text(errors="replace")[-4000:]
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"no /ping answer from {url} after {ready_timeout:.0f}s")
            time.sleep(0.1)
        timings["start"] = time.monotonic() - started

        started = time.monotonic()
        server.run_as_root(
            _PROVISION,
            RSE,
            str(rse_prefix),
            str(ACCOUNT_LIMIT_BYTES),
            ACCOUNT,
            PASSWORD,
            OTHER_ACCOUNT,
            f"{OTHER_ACCOUNT}-secret",
        )
        timings["provision"] = time.monotonic() - started
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def running_server(base: Path) -> Iterator[RucioServer]:
    """Install if needed, start, yield, and always stop the server."""
    report = ensure_server_venv()
    server = start_server(base)
    server.timings["install"] = report.seconds
    try:
        yield server
    finally:
        server.stop()
