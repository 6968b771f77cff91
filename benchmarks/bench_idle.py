"""What an idle pool costs Redis (issue 18): commands per second per idle pool.

Run: ``python3 dev.py bench benchmarks/bench_idle.py`` (or directly with the
venv's python from the repository root).  A private ``redis-server`` on a
free port; ``--pools`` process WorkerPools of one worker each, in this
process, consuming an empty queue as ``poolx worker`` does (status every
5 s, the command's fetch timeout); after a warm-up, the difference of
``INFO commandstats`` over ``--seconds`` seconds, divided by pools and
seconds, per command and in total (target: <= 1 command/s per idle pool).

``--baseline DIR`` runs the same with the poolx found in ``DIR`` (a checkout
of an older commit) in a subprocess and prints both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def init(url: str) -> Any:
    from poolx import get_broker

    return get_broker(url)


def _commandstats(client: Any) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(stats["calls"])
            for name, stats in client.info("commandstats").items()}


def measure(url: str, pools: int, seconds: float, warmup: float) -> dict[str, float]:
    import redis

    from poolx.core import get_broker
    from poolx.pool.process import WorkerPool

    client = redis.Redis.from_url(url)
    started = []
    try:
        for i in range(pools):
            pool = WorkerPool(get_broker(url), init, workers=1, name=f"idle-{i}")
            pool.start(timeout=_fetch_timeout(), handle_sigterm=False)
            started.append(pool)
        pause = threading.Event()
        pause.wait(warmup)
        before = _commandstats(client)
        pause.wait(seconds)
        after = _commandstats(client)
    finally:
        for pool in started:
            pool.stop(join=False)
        for pool in started:
            pool.join(30)
    per = {name: (after[name] - before.get(name, 0)) / pools / seconds for name in after}
    per.pop("info", None)  # this script's own
    return {name: rate for name, rate in sorted(per.items()) if rate > 0}


def _fetch_timeout() -> float:
    """What ``poolx worker`` passes as the consumer's fetch timeout (1 s
    before it became ``poolx.cli.FETCH_TIMEOUT``)."""
    from poolx import cli

    return float(getattr(cli, "FETCH_TIMEOUT", 1.0))


def _private_redis() -> Any:
    sys.path.append(str(ROOT))  # after the poolx under test (--baseline)
    from tests.redis_server import RedisServer, redis_binary

    binary = redis_binary()
    return RedisServer(binary).start() if binary else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", type=int, default=20, help="idle pools (default 20)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds (default 30)")
    parser.add_argument("--warmup", type=float, default=6.0, help="seconds before measuring")
    parser.add_argument("--baseline", metavar="DIR", help="also run the poolx found in DIR")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    server = _private_redis()
    if server is None:
        print("(no redis-server binary)", file=sys.stderr)
        return 0
    try:
        if args.baseline:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([args.baseline, str(HERE)])}
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--json", "--pools", str(args.pools),
                 "--seconds", str(args.seconds), "--warmup", str(args.warmup)],
                env=env, cwd=args.baseline, stdout=subprocess.PIPE, text=True, check=True)
            baseline = json.loads(proc.stdout)
        this = measure(server.url, args.pools, args.seconds, args.warmup)
    finally:
        server.cleanup()
    if args.json:
        print(json.dumps(this))
        return 0
    print(f"{args.pools} idle pools (1 worker each) on one Redis, {args.seconds:g} s measured: "
          f"Redis commands per second per idle pool")
    rows = {"this": this}
    if args.baseline:
        rows = {"baseline": baseline, **rows}
    names = sorted({name for fig in rows.values() for name in fig})
    print(f"{'command':<14}" + "".join(f"{label:>10}" for label in rows))
    for name in names:
        print(f"{name:<14}" + "".join(f"{fig.get(name, 0):>10.2f}" for fig in rows.values()))
    print(f"{'total':<14}" + "".join(f"{sum(fig.values()):>10.2f}" for fig in rows.values()))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    import bench_idle  # the workers find init under this name

    sys.exit(bench_idle.main())
