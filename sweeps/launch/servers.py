"""Local servers for multi-worker sweeps: a PostgreSQL server and an MLflow tracking server on 127.0.0.1.

    python -m sweeps.services start [--root DIR]   # prints the storage URL and the tracking URI
    python -m sweeps.services status
    python -m sweeps.services stop

State (data directory, logs, ports, a generated password) lives under ``mlruns/services/`` (``--root``).
The same functions back ``make services`` / ``make services-stop`` and the multi-worker tests.

Why this module: PostgreSQL's ``initdb`` and ``postgres`` refuse to run as root (as CI and these
machines do), so the server runs as an unprivileged user (``postgres``, via ``runuser``), with its data and
socket directories in our state folder, listening on loopback only, password (SCRAM) authentication.
The MLflow server uses PostgreSQL as its backend store and a shared folder for artifacts; its database URL
reaches it through ``MLFLOW_BACKEND_STORE_URI``, never its command line (which any user can read).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from sweeps.support.secrets import redact_text

DEFAULT_ROOT = Path("mlruns/services")
USER = "sweeplab"  # the database role
DATABASES = ("optuna", "mlflow")


@dataclass
class State:
    root: str
    pg_port: int
    password: str
    mlflow_port: int = 0
    mlflow_pid: int = 0
    artifacts: str = ""

    def url(self, database: str = "optuna", password: bool = True) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.pg_port}/{database}"

    @property
    def storage(self) -> str:
        return self.url("optuna")

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}" if self.mlflow_port else ""


def pg_bin(name: str) -> str:
    """A PostgreSQL server program: on PATH, or where Debian's ``postgresql`` package puts it."""
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    raise SystemExit(f"error: {name} not found: install PostgreSQL (Debian: apt-get install postgresql)")


def _as_server_user(command: list[str]) -> list[str]:
    """``postgres`` and ``initdb`` refuse root: run them as the ``postgres`` user where we are root."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", _server_user(), "--", *command]


def _server_user() -> str:
    import pwd

    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise SystemExit("error: no unprivileged user (postgres or nobody) to run PostgreSQL as")


def _give_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(_server_user())
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    """Whether PostgreSQL could listen on ``port`` (it binds with SO_REUSEADDR, as here: the connections
    of its previous run may linger in TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _state_file(root: Path) -> Path:
    return root / "state.json"


def load(root: Path = DEFAULT_ROOT) -> State | None:
    path = _state_file(root)
    return State(**json.loads(path.read_text())) if path.exists() else None


def _save(state: State) -> None:
    path = _state_file(Path(state.root))
    path.write_text(json.dumps(asdict(state)))
    path.chmod(0o600)  # holds the password


def start_postgres(root: Path = DEFAULT_ROOT, timeout: float = 60) -> State:
    """initdb (first time), start the server on a free loopback port, create the databases."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    state = load(root)
    if state and postgres_alive(state):
        return state
    pg = root / "pg"
    data, sockets = pg / "data", pg / "run"
    password = state.password if state else secrets.token_urlsafe(18)
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(pg, ignore_errors=True)
        data.mkdir(parents=True)
        sockets.mkdir(parents=True)
        # The server user must be able to reach its folders through ours (search permission only).
        for parent in pg.parents:
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o001)
        pwfile = pg / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        _give_to_server_user(pg)
        command = [pg_bin("initdb"), "-D", str(data), "-U", USER, "--pwfile", str(pwfile)]
        command += ["-A", "scram-sha-256", "-E", "UTF8", "--no-sync"]
        _run(_as_server_user(command), "initdb")
        pwfile.unlink()
    # The same port as before where it is free: the URL that workers and users hold stays valid.
    port = state.pg_port if state and _port_free(state.pg_port) else free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c max_connections=200 -c fsync=off"
    command = [pg_bin("pg_ctl"), "-D", str(data), "-l", str(pg / "server.log"), "-o", options]
    command += ["-w", "-t", str(int(timeout)), "start"]
    _run(_as_server_user(command), "pg_ctl start")
    state = State(root=str(root), pg_port=port, password=password)
    _save(state)
    _create_databases(state)
    return state


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, cwd="/")
    if done.returncode:
        raise SystemExit(f"error: {what} failed: {(done.stderr or done.stdout).strip()[-2000:]}")


def _create_databases(state: State) -> None:
    for name in DATABASES:
        create_database(state, name)


def create_database(state: State, name: str) -> str:
    """The database ``name`` on the server (created if missing); its URL, with the password."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(state.url("postgres"), autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return state.url(name)


def postgres_alive(state: State) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", state.pg_port)) == 0


def start_mlflow(
    state: State, artifacts: Path | None = None, workers: int = 2, timeout: float = 120
) -> State:
    """``mlflow server`` on a free loopback port over the ``mlflow`` database; artifacts in ``artifacts``
    (a folder every worker can reach: on a cluster, a shared file system)."""
    if state.mlflow_pid and _alive(state.mlflow_pid) and _healthy(state.tracking_uri):
        return state
    root = Path(state.root)
    folder = (artifacts or root / "artifacts").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--artifacts-destination", str(folder), "--workers", str(workers)]
    env = {
        **os.environ,
        # SQLAlchemy 2.1 reads postgresql:// as psycopg 3, the driver installed.
        "MLFLOW_BACKEND_STORE_URI": state.url("mlflow"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    with (root / "mlflow.log").open("ab") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=root
        )
    state.mlflow_port, state.mlflow_pid, state.artifacts = port, proc.pid, str(folder)
    _save(state)
    if not wait_up(state.tracking_uri, proc, timeout):
        stop(root)
        tail = (root / "mlflow.log").read_text()[-2000:]
        raise SystemExit(f"error: mlflow server did not start:\n{tail}")
    return state


def wait_up(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    """Whether the MLflow server at ``url`` (run by ``proc``) answers within ``timeout`` seconds: it takes
    seconds to start its workers."""
    deadline = time.monotonic() + timeout
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _healthy(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/health", timeout=2).close()  # noqa: S310 - our loopback URL
        return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def start(root: Path = DEFAULT_ROOT, mlflow: bool = True, artifacts: Path | None = None) -> State:
    state = start_postgres(root)
    return start_mlflow(state, artifacts) if mlflow else state


def stop(root: Path = DEFAULT_ROOT) -> None:
    """Stop the MLflow server and PostgreSQL (the data stay, for the next ``start``)."""
    state = load(root.resolve())
    if state is None:
        return
    if state.mlflow_pid and _alive(state.mlflow_pid):
        try:
            os.killpg(state.mlflow_pid, signal.SIGTERM)
            for _ in range(50):
                if not _alive(state.mlflow_pid):
                    break
                time.sleep(0.1)
            else:
                os.killpg(state.mlflow_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    data = Path(state.root) / "pg" / "data"
    if (data / "postmaster.pid").exists():
        command = [pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
        subprocess.run(_as_server_user(command), capture_output=True, cwd="/")
    state.mlflow_pid = state.mlflow_port = 0
    _save(state)


def describe(state: State | None) -> str:
    if state is None:
        return "no services started here (python -m sweeps.services start)"
    pg = "running" if postgres_alive(state) else "stopped"
    ml = "running" if state.mlflow_pid and _healthy(state.tracking_uri) else "stopped"
    return "\n".join(
        [
            f"postgresql  {pg}  hydra.sweeper.storage={redact_text(state.storage)} "
            "(with the password: python -m sweeps.services url)",
            f"mlflow      {ml}  tracking=server tracking.uri={state.tracking_uri or '-'}",
            f"artifacts   {state.artifacts or '-'}",
            f"state       {_state_file(Path(state.root))} (holds the generated password; mode 600)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.services", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "status", "url"])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="state folder (default: %(default)s)")
    parser.add_argument("--artifacts", type=Path, default=None, help="MLflow artifacts folder (shared)")
    parser.add_argument("--no-mlflow", action="store_true", help="PostgreSQL only")
    args = parser.parse_args(argv)
    if args.action == "start":
        state = start(args.root, mlflow=not args.no_mlflow, artifacts=args.artifacts)
        print(describe(state))
    elif args.action == "stop":
        stop(args.root)
        print("stopped")
    elif args.action == "url":  # for $(...) in a shell: the storage URL with its password
        found = load(args.root.resolve())
        if found is None:
            raise SystemExit("error: no services started here (python -m sweeps.services start)")
        print(found.storage)
    else:
        print(describe(load(args.root.resolve())))
    return 0
