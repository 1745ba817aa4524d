"""Command line: ``python -m gud run|status|bench``.

    python -m gud run e1 e2 --profile gpu --budget-s 540   # compute into results/, resumable
    python -m gud run --pending --profile gpu                # every experiment still missing
    python -m gud run --all --profile ci --jobs 2            # all, two worker processes
    python -m gud status --profile gpu                       # stored / missing / stale results
    python -m gud fid e1 --profile gpu                       # FID of stored samples (fid extra)
    python -m gud bench --quick                              # training and sampling throughput
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from .profiles import EXPERIMENTS, PROFILES

EXIT_INCOMPLETE = 3


def _run(args) -> int:
    from .profiles import experiment_config
    from .results import ResultsStore
    from .runner import MICRO_ROOT, BudgetExhausted, micro_config, pending, run

    if sum(bool(x) for x in (args.experiments, args.pending, args.all)) != 1:
        print("name experiments, or give --pending or --all (exactly one of them)", file=sys.stderr)
        return 2
    exps = list(EXPERIMENTS) if args.all else pending(args.profile) if args.pending else args.experiments
    unknown = [e for e in exps if e not in EXPERIMENTS]
    if unknown:
        print(f"unknown experiments {unknown}; known: {', '.join(EXPERIMENTS)}", file=sys.stderr)
        return 2
    if not exps:
        print(f"nothing to do: every {args.profile} result is stored")
        return 0
    if args.jobs > 1 and len(exps) > 1:
        return _parallel(exps, args)
    start = time.monotonic()
    for exp in exps:
        left = None if args.budget_s is None else args.budget_s - (time.monotonic() - start)
        try:
            if left is not None and left <= 0:
                raise BudgetExhausted(f"{exp}: not started")
            extra = {}
            if args.micro:  # the same command at a micro size, results kept apart from the real ones
                extra = dict(config=micro_config(exp, experiment_config(exp, args.profile)),
                             store=ResultsStore(MICRO_ROOT / "results"), runs_root=MICRO_ROOT / "runs")
            run(exp, args.profile, budget_s=left, recompute=args.recompute, device=args.device,
                progress=not args.quiet, **extra)
        except BudgetExhausted as exc:
            rest = exps[exps.index(exp):]
            print(f"budget exhausted: {exc}. Remaining: {', '.join(rest)}. "
                  f"Run the same command again to resume.")
            return EXIT_INCOMPLETE
    print(f"done: {', '.join(exps)} ({time.monotonic() - start:.0f} s)")
    return 0


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
    if args.budget_s is not None:
        base += ["--budget-s", str(args.budget_s)]
    while queue or running:
        while queue and len(running) < args.jobs:
            exp = queue.pop(0)
            running[exp] = subprocess.Popen(base + [exp], env=env)
        time.sleep(0.5)
        for exp, proc in list(running.items()):
            if proc.poll() is not None:
                del running[exp]
                if proc.returncode != 0:
                    failed.append((exp, proc.returncode))
    if failed:
        print(f"failed or incomplete: {failed}", file=sys.stderr)
        return max(rc for _, rc in failed)
    return 0


def _status(args) -> int:
    from .runner import stale, status

    st = status(args.profile)
    for exp, s in st.items():
        print(f"{exp:10s} {s}")
    old = stale(args.profile)
    for p in old:
        print(f"stale: {p} (matches no current configuration: recompute or delete it)")
    return 1 if (old and args.check) else 0


def _fid(args) -> int:
    from .fid import score_stored

    for exp in args.experiments:
        score_stored(exp, args.profile, device=args.device)
    return 0


def _bench(args) -> int:
    from .bench import main as bench_main

    return bench_main(quick=args.quick, profile=args.profile, seconds=args.seconds, device=args.device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gud", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    default_profile = os.environ.get("GUD_PROFILE", "ci") or "ci"

    p = sub.add_parser("run", help="compute experiments into the results store")
    p.add_argument("experiments", nargs="*", help=f"any of {', '.join(EXPERIMENTS)}")
    p.add_argument("--profile", default=default_profile, choices=list(PROFILES))
    p.add_argument("--pending", action="store_true", help="every experiment whose result is missing")
    p.add_argument("--all", action="store_true", help="every experiment (stored ones are skipped)")
    p.add_argument("--budget-s", type=float, default=None, help="stop cleanly before this many seconds")
    p.add_argument("--recompute", action="store_true", help="recompute even if a result is stored")
    p.add_argument("--jobs", type=int, default=1, help="experiments run in parallel processes")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--micro", action="store_true",
                   help="a dry run at a micro size (seconds on a CPU), results under runs/micro/")
    p.set_defaults(func=_run)

    p = sub.add_parser("status", help="which results are stored, missing or stale")
    p.add_argument("--profile", default=default_profile, choices=list(PROFILES))
    p.add_argument("--check", action="store_true", help="exit 1 if a stored result is stale")
    p.set_defaults(func=_status)

    p = sub.add_parser("fid", help="FID of the samples stored results kept for it (needs the fid extra)")
    p.add_argument("experiments", nargs="+")
    p.add_argument("--profile", default="gpu", choices=list(PROFILES))
    p.add_argument("--device", default=None)
    p.set_defaults(func=_fid)

    p = sub.add_parser("bench", help="throughput probe of the networks of a profile")
    p.add_argument("--quick", action="store_true", help="a 60-second probe")
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--profile", default="gpu", choices=list(PROFILES))
    p.add_argument("--device", default=None)
    p.set_defaults(func=_bench)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
