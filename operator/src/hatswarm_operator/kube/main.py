"""`hatswarm-operator`: run the kopf operator (handlers.py) with metrics and a liveness probe.

hatswarm-operator                          # peering (HA) under the name `hatswarm`
hatswarm-operator --standalone -n floor-1  # one replica, one namespace
hatswarm-operator --all-namespaces --metrics-port 9100 --log-format json
hatswarm-operator --priority auto          # HA: a random peering priority per replica
hatswarm-operator --reads list             # the old list-per-tick reads (benchmarks only)
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from collections.abc import Sequence

import kopf

from hatswarm_operator.control import metrics
from hatswarm_operator.kube import handlers

LOG_FORMATS = {
    "json": kopf.LogFormat.JSON,
    "plain": kopf.LogFormat.PLAIN,
    "full": kopf.LogFormat.FULL,
}


PRIORITY_AUTO_MAX = 2**31 - 1


def priority(text: str) -> int:
    """`--priority`: an integer, or `auto` for a random one in [1, 2**31 - 1].

    kopf's peering lets the replica of the highest priority act and pauses every peer of the
    same priority, so replicas started alike (one Deployment) must not share one: `auto`
    draws each a random priority, and two replicas collide with odds of about 1 in 2**31.
    """
    if text.strip().lower() == "auto":
        return 1 + secrets.randbelow(PRIORITY_AUTO_MAX)
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer or 'auto': {text!r}") from None


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hatswarm-operator", description=__doc__.split("\n")[0])
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[],
        help="watch this namespace (repeatable; globs like 'floor-*' work)",
    )  # fmt: skip
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    p.add_argument(
        "--standalone", action="store_true",
        help="no peering: this replica acts alone (default: peer with the other replicas)",
    )  # fmt: skip
    p.add_argument("--peering-name", default="hatswarm", help="KopfPeering object for HA")
    p.add_argument(
        "--peering-lifetime", type=int, default=None, metavar="SECONDS",
        help="how long a replica's peering record lasts without renewal: a killed active "
        "replica is replaced within this (default: kopf's 60)",
    )  # fmt: skip
    p.add_argument(
        "--priority", type=priority, default=0,
        help="peering priority of this replica: an integer, or 'auto' (random per replica)",
    )  # fmt: skip
    p.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz",
        help="liveness endpoint URL ('' = off)",
    )  # fmt: skip
    p.add_argument("--metrics-port", type=int, default=9100, help="Prometheus /metrics; 0 = off")
    p.add_argument("--metrics-host", default="0.0.0.0")
    p.add_argument("--agent-timeout", type=float, default=1.0, help="agent probe deadline (s)")
    p.add_argument(
        "--fan-out", type=positive, default=64, metavar="N",
        help="agent calls in flight at once per pool (probes, routing tables)",
    )  # fmt: skip
    p.add_argument(
        "--reads", choices=("watch", "list"), default="watch",
        help="watch: follow watch-fed caches (default); list: the loop before them, for "
        "comparison only (Nodes, Pods and EdgeModels listed every tick, every agent probed "
        "at once inside the tick)",
    )  # fmt: skip
    p.add_argument("--log-format", choices=sorted(LOG_FORMATS), default="json")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kopf.configure(verbose=args.verbose, quiet=args.quiet, log_format=LOG_FORMATS[args.log_format])
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the caches' requests: one line each
    handlers.CONFIG = handlers.OperatorConfig(
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering_name,
        peering_lifetime_s=args.peering_lifetime,
        agent_timeout_s=args.agent_timeout,
        reads=args.reads,
        fan_out=args.fan_out,
    )

    if args.metrics_port:
        metrics.serve(args.metrics_port, args.metrics_host)
    namespaces = args.namespace
    kopf.run(
        registry=kopf.get_default_registry(),
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering_name,
        priority=args.priority,
        clusterwide=args.all_namespaces or not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
