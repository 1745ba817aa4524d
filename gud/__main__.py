"""Command line: ``python -m gud run|status|verify|fid|bench``.

    python -m gud run e1 e2 --profile gpu --budget-s 540   # compute into results/, resumable
    python -m gud run --pending --profile gpu                # every experiment still missing
    python -m gud run --all --profile ci --jobs 2            # all, two worker processes
    python -m gud status --profile gpu                       # stored / missing / stale results
    python -m gud verify --profile ci --against DIR          # recomputed results (store DIR) vs the reference
    python -m gud fid e1 --profile gpu                       # FID of stored samples (fid extra)
    python -m gud bench --quick                              # training and sampling throughput

Exit status of `run`: 0 done; 2 a bad command line (one line names the bad value);
3 incomplete: the budget (--budget-s, counted from the process start) ran out, possibly while
waiting for another process running the same experiment, with checkpoints kept; 4 an
experiment was skipped (its data set is missing, e.g. offline) while the others ran;
130 / 143 stopped by SIGINT (Ctrl-C) / SIGTERM after writing a checkpoint. After 3, 130 or
143 the same command resumes. `status --check` exits 1 when a stored result is stale (of
no current configuration) or damaged; results of other code ("code drift") are only reported.
"""
from __future__ import annotations


def _process_start() -> float:
    """``time.monotonic()`` value of this process's start (Linux: /proc; elsewhere: now), so that a
    budget counts the interpreter's and torch's import time too."""
    import time

    now = time.monotonic()
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        import os

        elapsed = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return now
    return now - elapsed if 0 <= elapsed < 86400 else now


STARTED = _process_start()


def _started() -> float:
    """Where the budget counts from: the process start under ``python -m gud``, else now."""
    import time

    return STARTED if __name__ == "__main__" else time.monotonic()

import argparse  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from .profiles import EXPERIMENTS, PROFILES  # noqa: E402

EXIT_INCOMPLETE = 3
EXIT_SKIPPED = 4
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2)."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _profile(value: str) -> str:
    value = value.strip()
    if value not in PROFILES:
        raise argparse.ArgumentTypeError(f"unknown profile {value!r} (from --profile or GUD_PROFILE); "
                                         f"known: {', '.join(PROFILES)}")
    return value


def _jobs(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value!r}")
    return n


def _budget(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = float("nan")
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number of seconds, got {value!r} "
                                         "(leave it out for no budget)")
    return x


class _Stop(KeyboardInterrupt):
    """SIGTERM, raised where the process is (outside training, which checkpoints first)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def _on_sigterm(signum, frame):
    raise _Stop(signum)


def _interrupted(exc: KeyboardInterrupt, exp: str, rest: list[str]) -> int:
    """Say what an interruption left and how to resume; the exit status of the signal."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this message
    signum = getattr(exc, "signum", signal.SIGINT)
    name = signal.Signals(signum).name
    what = str(exc) if getattr(exc, "step", None) is not None else f"{name} during {exp}"
    print(f"interrupted: {what}. Finished trainings and evaluation steps are kept. Remaining: {', '.join(rest)}. "
          f"Run the same command again to resume (exit status {EXIT_SIGNAL[signum]}).", flush=True)
    return EXIT_SIGNAL[signum]


def _run(args) -> int:
    from .data import DatasetNotFoundError
    from .profiles import experiment_config
    from .results import ResultsStore
    from .runner import MICRO_ROOT, BudgetExhausted, micro_config, run

    signal.signal(signal.SIGTERM, _on_sigterm)

    if args.all + args.pending + (bool(args.experiments) and not args.pending) != 1:
        print("name experiments, or give --pending (optionally with names: their order) or --all", file=sys.stderr)
        return 2
    exps = list(EXPERIMENTS) if args.all else _pending_in_order(args) if args.pending else args.experiments
    unknown = [e for e in exps if e not in EXPERIMENTS]
    if unknown:
        print(f"unknown experiments {unknown}; known: {', '.join(EXPERIMENTS)}", file=sys.stderr)
        return 2
    if not exps:
        print(f"nothing to do: every {args.profile} result is stored")
        return 0
    if args.jobs > 1 and len(exps) > 1:
        return _parallel(exps, args)
    start = _started()  # the budget counts from the process start
    skipped, failed = [], []
    for exp in exps:
        left = None if args.budget_s is None else args.budget_s - (time.monotonic() - start)
        try:
            if left is not None and left <= 0:
                raise BudgetExhausted(f"{exp}: not started")
            extra = {}
            if args.micro:  # the same command at a micro size, results kept apart from the real ones
                extra = dict(config=micro_config(exp, experiment_config(exp, args.profile)),
                             store=ResultsStore(MICRO_ROOT / "results"), runs_root=MICRO_ROOT / "runs")
            run(exp, args.profile, budget_s=args.budget_s, started=start, recompute=args.recompute,
                device=args.device, progress=not args.quiet, **extra)
        except BudgetExhausted as exc:
            rest = exps[exps.index(exp):]
            print(f"budget exhausted: {exc}. Remaining: {', '.join(rest)}. "
                  f"Run the same command again to resume.")
            return EXIT_INCOMPLETE
        except DatasetNotFoundError as exc:
            print(f"skipped {exp}: {exc}", file=sys.stderr, flush=True)
            skipped.append(exp)
        except KeyboardInterrupt as exc:
            return _interrupted(exc, exp, exps[exps.index(exp):])
        except Exception:  # noqa: BLE001 - one failing experiment of several never stops the others
            if len(exps) == 1:
                raise
            import traceback

            traceback.print_exc()
            print(f"failed: {exp} (traceback above); going on with the others", file=sys.stderr, flush=True)
            failed.append(exp)
    if failed:
        print(f"failed: {', '.join(failed)}; done: {', '.join(e for e in exps if e not in failed + skipped) or 'nothing'}",
              file=sys.stderr)
        return 1
    if skipped:
        print(f"done: {', '.join(e for e in exps if e not in skipped) or 'nothing'}; skipped (data set missing): "
              f"{', '.join(skipped)} ({time.monotonic() - start:.0f} s)", file=sys.stderr)
        return EXIT_SKIPPED
    print(f"done: {', '.join(exps)} ({time.monotonic() - start:.0f} s)")
    return 0


def _pending_in_order(args) -> list[str]:
    """``--pending``: the missing results in the book's order; ``--pending e4 e2``: those of the named
    ones still missing, in the named order (each once)."""
    from .runner import pending

    todo = pending(args.profile)
    if not args.experiments:
        return todo
    return [e for e in dict.fromkeys(args.experiments) if e in todo or e not in EXPERIMENTS]


def _parallel(exps: list[str], args) -> int:
    """One subprocess per experiment, ``--jobs`` at a time (one torch thread each on CPU)."""
    env = dict(os.environ, GUD_THREADS=os.environ.get("GUD_THREADS", "1"))
    queue, running, failed = list(exps), {}, []
    base = [sys.executable, "-m", "gud", "run", "--profile", args.profile, "--quiet"]
    if args.recompute:
        base.append("--recompute")
    if args.micro:
        base.append("--micro")
    if args.device:
        base += ["--device", args.device]
    started = _started()
    try:
        while queue or running:
            while queue and len(running) < args.jobs:
                exp = queue.pop(0)
                budget = []
                if args.budget_s is not None:  # what is left of the budget, counted from this process's start
                    left = args.budget_s - (time.monotonic() - started)
                    if left <= 0:
                        failed.append((exp, EXIT_INCOMPLETE))
                        continue
                    budget = ["--budget-s", repr(left)]
                # own session: a Ctrl-C reaches the workers once, forwarded below (a second one would
                # stop them without a checkpoint)
                running[exp] = subprocess.Popen(base + budget + [exp], env=env, start_new_session=True)
            time.sleep(0.5)
            for exp, proc in list(running.items()):
                if proc.poll() is not None:
                    del running[exp]
                    if proc.returncode != 0:
                        failed.append((exp, proc.returncode))
    except KeyboardInterrupt as exc:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signum = getattr(exc, "signum", signal.SIGINT)
        for proc in running.values():  # each worker checkpoints and says what it left
            proc.send_signal(signum)
        for exp, proc in running.items():
            proc.wait()
        rest = [e for e, _ in failed] + list(running) + queue
        print(f"interrupted by {signal.Signals(signum).name}. Remaining: {', '.join(rest) or 'none'}. "
              f"Run the same command again to resume.", flush=True)
        return EXIT_SIGNAL[signum]
    if failed:
        print(f"failed or incomplete: {failed}", file=sys.stderr)
        return max(rc for _, rc in failed)
    return 0


def _status(args) -> int:
    from .runner import inspect, stale

    entries = inspect(args.profile)
    for exp, entry in entries.items():
        print(f"{exp:10s} {entry.line()}")
    old = stale(args.profile)
    for p in old:
        print(f"stale: {p} (matches no current configuration: recompute or delete it)")
    corrupt = [e for e, entry in entries.items() if entry.state == "corrupt"]
    return 1 if ((old or corrupt) and args.check) else 0


def _fid(args) -> int:
    from .fid import score_stored

    for exp in args.experiments:
        score_stored(exp, args.profile, device=args.device)
    return 0


def _bench(args) -> int:
    from .bench import main as bench_main

    return bench_main(quick=args.quick, profile=args.profile, seconds=args.seconds, device=args.device,
                      json_path=args.json, peer=not args.no_peer, peer_sizes=args.peer_sizes,
                      peer_only=args.peer_only)


def _verify(args) -> int:
    from .results import ResultsStore
    from .verify import verify

    exps = args.experiments or list(EXPERIMENTS)
    checks = verify(exps, args.profile, ResultsStore(args.reference), ResultsStore(args.against))
    bad = [c for c in checks if not c.ok]
    for c in bad:
        print("FAIL " + c.line())
    print(f"verify {args.profile}: {len(checks) - len(bad)} of {len(checks)} quantities within tolerance "
          f"({', '.join(exps)}; reference {ResultsStore(args.reference).root}, recomputed {args.against})")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m gud", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    default_profile = os.environ.get("GUD_PROFILE", "ci") or "ci"

    p = sub.add_parser("run", help="compute experiments into the results store",
                       epilog="exit status: 0 done, 2 bad command line, 3 budget ran out (resumable), 4 an "
                              "experiment skipped for a missing data set, 130/143 SIGINT/SIGTERM (checkpoint "
                              "written, resumable)")
    p.add_argument("experiments", nargs="*", help=f"any of {', '.join(EXPERIMENTS)}")
    p.add_argument("--profile", default=default_profile, type=_profile, help=f"one of {', '.join(PROFILES)}")
    p.add_argument("--pending", action="store_true",
                   help="every experiment whose result is missing; with names, those of them, in that order")
    p.add_argument("--all", action="store_true", help="every experiment (stored ones are skipped)")
    p.add_argument("--budget-s", type=_budget, default=None,
                   help="stop cleanly (exit 3, resumable) before this many seconds after the process started; "
                        "positive and finite (leave it out for no budget)")
    p.add_argument("--recompute", action="store_true",
                   help="recompute even if a result is stored (checkpoints and steps of the same code are reused)")
    p.add_argument("--jobs", type=_jobs, default=1, help="experiments run in parallel processes (>= 1)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--micro", action="store_true",
                   help="a dry run at a micro size (seconds on a CPU), results under runs/micro/")
    p.set_defaults(func=_run)

    p = sub.add_parser("status", help="which results are stored, missing or stale")
    p.add_argument("--profile", default=default_profile, type=_profile, help=f"one of {', '.join(PROFILES)}")
    p.add_argument("--check", action="store_true",
                   help="exit 1 if a stored result is stale or damaged (code drift is only reported)")
    p.set_defaults(func=_status)

    p = sub.add_parser("fid", help="FID of the samples stored results kept for it (needs the fid extra)")
    p.add_argument("experiments", nargs="+")
    p.add_argument("--profile", default="gpu", type=_profile, help=f"one of {', '.join(PROFILES)}")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_fid)

    p = sub.add_parser("bench", help="throughput probe of the networks of a profile")
    p.add_argument("--quick", action="store_true", help="a 60-second probe")
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--profile", default="gpu", type=_profile, help=f"one of {', '.join(PROFILES)}")
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None, help="also write every measurement to this JSON file")
    p.add_argument("--no-peer", action="store_true", help="skip the comparison with denoising-diffusion-pytorch")
    p.add_argument("--peer-sizes", nargs="+", default=None, metavar="SIZE",
                   help="the sizes of the peer comparison (gud.bench.PEER_SIZES; default: by --quick and device)")
    p.add_argument("--peer-only", action="store_true",
                   help="only the peer comparison (--seconds: per size and precision)")
    p.set_defaults(func=_bench)

    p = sub.add_parser("verify", help="compare recomputed results with the reference (the committed ones)",
                       epilog="exit status: 0 every quantity within tolerance, 1 otherwise (each failure printed "
                              "with reference, recomputed value and tolerance)")
    p.add_argument("experiments", nargs="*", help="default: every experiment")
    p.add_argument("--profile", default=default_profile, type=_profile, help=f"one of {', '.join(PROFILES)}")
    p.add_argument("--against", required=True, help="the results store holding the recomputed results")
    p.add_argument("--reference", default=None, help="the reference store (default: results/ or $GUD_RESULTS)")
    p.set_defaults(func=_verify)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
