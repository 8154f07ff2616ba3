"""``make ui``: the MLflow UI over the local store, on this machine only, and the address of the sweeps' runs.

MLflow 3's UI opens an experiment on its GenAI pages (Traces: "No data" for training runs) unless it is told
the machine-learning workflow. Its web app (3.17) takes that from the address (``?workflowType=
machine_learning``), else from the browser's last choice, GenAI by default; the experiment's
``mlflow.experimentKind`` tag, which sweeplab sets when it creates the experiment, only decides it in the UIs
before that switch. So this prints the runs table's address, once the server answers.

    python -m sweeps.ui [--port 5000] [--store sqlite:///mlruns/mlflow.db] [--experiment sweeplab]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

from sweeps.launch import servers

WORKFLOW = "workflowType=machine_learning"
# The server's web framework warns on every worker's start-up that Starlette's WSGI middleware, which MLflow
# uses, is deprecated: MLflow's business, not the user's; the rest of its output stays.
QUIET_SERVER = "ignore:starlette.middleware.wsgi is deprecated"


def runs_url(base: str, experiment_id: str | None) -> str:
    """The page of the experiment's runs table (the experiments list without one), in the ML workflow."""
    if experiment_id is None:
        return f"{base}/#/experiments?{WORKFLOW}"
    return f"{base}/#/experiments/{experiment_id}/runs?{WORKFLOW}"


def experiment_id(base: str, name: str) -> str | None:
    """The experiment's id from the server's REST API; None when it has none of that name (yet)."""
    query = urllib.parse.urlencode({"experiment_name": name})
    try:
        with urllib.request.urlopen(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=10
        ) as r:
            return str(json.load(r)["experiment"]["experiment_id"])
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def wait_for(base: str, name: str, server: subprocess.Popen, timeout: float) -> str | None:
    """The experiment's id once the server answers."""
    if not servers.wait_up(base, server, timeout):
        if server.poll() is not None:
            raise SystemExit(server.returncode or 1)
        raise SystemExit(f"error: the MLflow UI at {base} did not answer within {timeout:g} s")
    return experiment_id(base, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.ui", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--store", default="sqlite:///mlruns/mlflow.db")
    parser.add_argument("--experiment", default="sweeplab")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for the server")
    args, more = parser.parse_known_args(argv)  # the rest goes to ``mlflow ui`` (--workers 1, ...)
    base = f"http://{args.host}:{args.port}"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env["PYTHONWARNINGS"] = ",".join(w for w in (env.get("PYTHONWARNINGS"), QUIET_SERVER) if w)
    command = [sys.executable, "-m", "mlflow", "ui", "--host", args.host, "--port", str(args.port)]
    server = subprocess.Popen([*command, "--backend-store-uri", args.store, *more], env=env)
    try:
        found = wait_for(base, args.experiment, server, args.timeout)
        if found is None:
            print(
                f"no experiment {args.experiment!r} in {args.store} yet (make sweep records one)", flush=True
            )
        print(f"the runs: {runs_url(base, found)}", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return server.wait()  # Ctrl-C reached the server too: it stops on its own
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
