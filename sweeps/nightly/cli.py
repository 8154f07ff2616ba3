"""Overnight sweeps: run a plan from ``conf/plan/`` until a deadline, resume it the next night, and leave
a morning report.

    python -m sweeps.nightly default --until 07:00           # tonight, until 07:00 (or --hours 8)
    python -m sweeps.nightly default --hours 0.25 trainer.max_epochs=5   # extra overrides for the plan
    python -m sweeps.nightly install default --at 22:00      # every night at 22:00 (crontab; or --systemd)
    python -m sweeps.nightly list | uninstall default
    python -m sweeps.nightly stop default                    # end tonight's run now (the report follows)

A run is ``python -m sweeps.run -m plan=PLAN`` with the deadline as ``hydra.sweeper.deadline`` (the
sweeper starts no trial that would not end before it and stops one still training then) and the study named
after the plan, so the next night resumes it. One copy per plan at a time (``mlruns/nightly/<plan>/lock``).
Exit codes: the sweep's own (0 when it ran to its end or to the deadline), 2 for bad input, 75 when the plan
is already running.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sweeps.nightly import clock, schedule, stop
from sweeps.nightly.lock import AlreadyRunning, PlanLock, describe
from sweeps.search import DEFAULT_STORAGE
from sweeps.support import interrupt, renames
from sweeps.support.errors import ConfigError
from sweeps.support.processes import ROOT, python_path
from sweeps.support.secrets import redact_override

EXIT_BUSY = 75  # sysexits' EX_TEMPFAIL: try again later
GRACE = 900  # seconds after the deadline before a sweep that has not ended is terminated
CONF = ROOT / "conf"
GROUPS = ("plan", "schedule")  # where plans are: the group, then its old name (renames.GROUPS), with a note
COMMANDS = ("run", "install", "uninstall", "list", "stop")


def say(message: str) -> None:
    print(f"[{dt.datetime.now():%Y-%m-%d %H:%M:%S}] nightly: {message}", flush=True)


def find_plan(plan: str, conf: Path = CONF) -> Path:
    """``conf/plan/PLAN.yaml``, else ``conf/schedule/PLAN.yaml`` (a plan left under the group's old name)."""
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", plan):
        for group in GROUPS:
            if (conf / group / f"{plan}.yaml").is_file():
                return conf / group / f"{plan}.yaml"
    known = ", ".join(sorted({p.stem for group in GROUPS for p in (conf / group).glob("*.yaml")})) or "none"
    raise ConfigError(f"no plan {plan!r} in {conf / GROUPS[0]} (plans: {known})")


def plan_file(plan: str, conf: Path = CONF) -> Path:
    """``find_plan``; a plan found under the old name says in one line on stderr where it belongs now."""
    path = find_plan(plan, conf)
    if path.parent.name != GROUPS[0]:
        print(
            f"note: nightly plans are the `{GROUPS[0]}` group now: move {path} to {conf / GROUPS[0]}/ "
            f"(conf/{path.parent.name}/ still works for now)",
            file=sys.stderr,
            flush=True,
        )
    return path


def plan_override(plan: str) -> str:
    """The override that picks the plan in the group holding it: ``plan=PLAN`` (or the old ``schedule=``)."""
    return f"{find_plan(plan).parent.name}={plan}"


def the_deadline(args: argparse.Namespace) -> dt.datetime:
    try:
        return clock.parse(args.until or "07:00", args.hours)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def compose(plan: str, overrides: list[str]) -> Any:
    """The plan's whole config, as the sweep will see it (bad overrides fail here, in one line)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hydra_compose(
                config_name="config", overrides=[plan_override(plan), *overrides], return_hydra_config=True
            )
    except Exception as err:  # noqa: BLE001 - Hydra raises several kinds, each with a readable first line
        raise ConfigError(f"plan {plan}: {str(err).strip().splitlines()[0]}") from None
    if not cfg.hydra.sweeper.get("params"):
        raise ConfigError(f"plan {plan}: hydra.sweeper.params is empty (a nightly plan is an Optuna search)")
    return cfg


def study_name(settings: Any, plan: str, started: dt.datetime) -> str:
    """The plan's study (``hydra.sweeper.study_name``, default ``nightly-<plan>``), which the next night
    resumes; with ``nightly.new_study_each_night`` a new one per night, ``<name>-<YYYY-MM-DD>``."""
    name = settings.get("study_name") or f"nightly-{plan}"
    if (settings.get("nightly") or {}).get("new_study_each_night"):
        name = f"{name}-{started:%Y-%m-%d}"
    return name


def night_folder(plan_dir: Path, started: dt.datetime) -> Path:
    """``<date>`` of the evening it started; a second run that day gets ``<date>.2`` and so on."""
    folder = plan_dir / f"{started:%Y-%m-%d}"
    n = 1
    while folder.exists():
        n += 1
        folder = plan_dir / f"{started:%Y-%m-%d}.{n}"
    folder.mkdir(parents=True)
    return folder


def _die_with_parent() -> None:
    """In the sweep's process: end when nightly ends, however it ends (Linux), so that a free lock always
    means that nothing of the plan runs."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def sweep(command: list[str], until: dt.datetime, plan_dir: Path) -> int:
    """Run the sweep in its own process; SIGTERM is passed on, Ctrl-C reaches it from the terminal.

    The sweep stops its trials at the deadline itself; a sweep still running ``GRACE`` seconds after it
    (hung somewhere outside a training loop) is terminated, so that the morning report is always written.
    """
    env = {**os.environ, "PYTHONPATH": python_path(), **stop.environment(plan_dir), renames.NOTED: "1"}
    proc = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent)  # noqa: PLW1509 - no threads yet
    signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
    # The terminal's Ctrl-C and hang-up reach the sweep too: it stops cleanly (``support.interrupt``), and
    # we still report.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        code = proc.wait(timeout=max(until.timestamp() - time.time(), 0) + GRACE)
    except subprocess.TimeoutExpired:
        say(f"the sweep still runs {GRACE}s after the deadline: terminating it")
        proc.terminate()
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    finally:
        interrupt.install()  # the report is written unless a signal comes now
    return 128 - code if code < 0 else code


def run(args: argparse.Namespace) -> int:
    plan_file(args.plan)
    until = the_deadline(args)
    cfg = compose(args.plan, args.overrides)  # bad input fails here, before anything is written
    workdir = Path.cwd()
    plan_dir = workdir / "mlruns" / "nightly" / args.plan
    lock = PlanLock(plan_dir / "lock")
    try:
        lock.acquire()
    except AlreadyRunning as err:
        print(f"error: plan {args.plan} is already running ({err}); lock file {lock.path}", file=sys.stderr)
        return EXIT_BUSY
    try:
        if lock.previous:
            say(f"took over the lock of {describe(lock.previous)}, which is no longer running")
        return tonight(args, cfg, until, plan_dir)
    finally:
        lock.release()


def tonight(args: argparse.Namespace, cfg: Any, until: dt.datetime, plan_dir: Path) -> int:
    from sweeps.nightly import report as nightly_report
    from sweeps.nightly import webhook

    settings = cfg.hydra.sweeper
    started = dt.datetime.now().astimezone()
    study = study_name(settings, args.plan, started)
    folder = night_folder(plan_dir, started)
    sweep_dir = folder / "sweep"
    say(f"plan {args.plan}, study {study}, deadline {until:%Y-%m-%d %H:%M:%S} -> {folder}")
    code = sweep(
        [
            sys.executable, "-m", "sweeps.run", "-m", plan_override(args.plan), *args.overrides,
            f"hydra.sweeper.deadline={until.timestamp()}",
            f"hydra.sweeper.study_name={study}",
            f"hydra.sweep.dir='{sweep_dir}'",
        ],
        until,
        plan_dir,
    )  # fmt: skip
    say(f"sweep ended with exit code {code}")
    stopped = stop.stopped_at(plan_dir)
    night = {
        "plan": args.plan,
        "group": find_plan(args.plan).parent.name,  # the report's command picks the plan with it
        "night": folder.name,
        "study": study,
        "started": started.isoformat(timespec="seconds"),
        "deadline": until.isoformat(),  # exact: a trial may start within the last second
        "stopped": stopped,  # when `python -m sweeps.nightly stop` ended the night early, if it did
        "ended": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "exit_code": code,
        "overrides": [redact_override(o) for o in args.overrides],
    }
    storage = settings.get("storage") or DEFAULT_STORAGE
    try:
        path, summary, note = nightly_report.write(
            study, storage, night, int(settings.n_trials), folder, plan_dir / "history.jsonl"
        )
    except Exception as err:  # noqa: BLE001 - the sweep's outcome still decides; say why there is no report
        nightly_report.warn(f"no report: {type(err).__name__}: {err}")
        return code or 1
    if cfg.tracking.get("enabled"):
        try:
            files = ["report.md", "summary.json", *summary["pictures"]]
            run_id = nightly_report.to_mlflow(cfg.tracking, sweep_dir, folder, files, note)
            say(f"report on MLflow run {run_id}" if run_id else "no MLflow parent run for this night")
        except Exception as err:  # noqa: BLE001 - the report file exists; MLflow is a copy
            nightly_report.warn(f"report not on MLflow: {type(err).__name__}: {err}")
    sent = webhook.notify(summary)
    if sent:
        say(sent)
    print(f"report: {path}", flush=True)
    return code


def install(args: argparse.Namespace) -> int:
    plan_file(args.plan)
    the_deadline(args)
    compose(args.plan, args.overrides)  # bad overrides fail now, not at 22:00
    workdir = Path(args.dir).resolve()
    options = ["--hours", str(args.hours)] if args.hours is not None else ["--until", args.until or "07:00"]
    options += args.overrides
    if args.systemd:
        lines = schedule.install_systemd(args.plan, workdir, args.at, options, args.systemd_dir)
    else:
        lines = schedule.install_cron(args.plan, workdir, args.at, options, args.crontab_file)
    print("\n".join(lines))
    print(f"log: {schedule.log_path(args.plan, workdir)}")
    return 0


def uninstall(args: argparse.Namespace) -> int:
    workdir = Path(args.dir).resolve()
    if args.systemd:
        lines = schedule.uninstall_systemd(args.plan, workdir, args.systemd_dir)
    else:
        lines = schedule.uninstall_cron(args.plan, workdir, args.crontab_file)
    print("\n".join(lines))
    return 0


def stop_now(args: argparse.Namespace) -> int:
    plan_file(args.plan)
    print(stop.request(args.plan, Path(args.dir).resolve() / "mlruns" / "nightly" / args.plan))
    return 0


def list_installed(args: argparse.Namespace) -> int:
    cron = schedule.list_cron(args.crontab_file)
    timers = schedule.list_systemd(args.systemd_dir)
    print("crontab:" if cron else "crontab: none")
    print("\n".join(cron)) if cron else None
    print("systemd timers:" if timers else "systemd timers: none")
    print("\n".join(timers)) if timers else None
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m sweeps.nightly",
        description="Overnight sweeps: run a plan from conf/plan/ until a deadline, resume it the next "
        "night, write a morning report. `python -m sweeps.nightly PLAN` is short for `run PLAN`.",
    )
    commands = top.add_subparsers(dest="command", required=True)

    def plan_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("plan", help="a plan: conf/plan/PLAN.yaml")
        when = p.add_mutually_exclusive_group()
        when.add_argument("--until", metavar="HH:MM", help="the deadline, a time of day (default 07:00)")
        when.add_argument("--hours", type=float, help="the deadline in hours from the start (0.25 allowed)")
        p.add_argument("overrides", nargs="*", help="extra Hydra overrides for the plan")

    def where_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--systemd", action="store_true", help="a systemd user timer instead of crontab")
        p.add_argument("--crontab-file", help="edit this file instead of `crontab -l`/`crontab -`")
        p.add_argument("--systemd-dir", help="unit folder (default ~/.config/systemd/user)")

    run_p = commands.add_parser("run", help="run a plan now, until the deadline")
    plan_options(run_p)
    inst = commands.add_parser("install", help="run a plan every night (crontab, or --systemd)")
    plan_options(inst)
    inst.add_argument("--at", required=True, metavar="HH:MM", help="when it starts each night")
    inst.add_argument("--dir", default=".", help="the folder it runs in (its mlruns/); default: here")
    where_options(inst)
    uninst = commands.add_parser("uninstall", help="remove an installed plan")
    uninst.add_argument("plan")
    uninst.add_argument("--dir", default=".", help="the folder it was installed for; default: here")
    where_options(uninst)
    lst = commands.add_parser("list", help="show installed plans")
    where_options(lst)
    halt = commands.add_parser("stop", help="end a plan's running night now; its report follows")
    halt.add_argument("plan")
    halt.add_argument("--dir", default=".", help="the folder the night runs in (its mlruns/); default: here")
    return top


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "run")
    top = parser()
    args, extra = top.parse_known_args(argv)  # overrides may come before or after the options
    flags = [e for e in extra if e.startswith("-")]
    if flags or (extra and not hasattr(args, "overrides")):
        top.error(f"unrecognized arguments: {' '.join(flags or extra)}")
    if extra:
        args.overrides += extra
    try:
        commands = {
            "run": run,
            "install": install,
            "uninstall": uninstall,
            "list": list_installed,
            "stop": stop_now,
        }
        return commands[args.command](args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
