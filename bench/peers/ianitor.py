#!/usr/bin/env python3
"""A stand-in for ianitor in svcbench's side-by-side runs.

ianitor (the Python tool svcwrap replaces) cannot be installed on the
benchmark machine: its package index is out of reach. This script does what
ianitor does, as RESEARCH.md describes it, so that svcwrap's figures have a
Python peer measured in the same run, on the same agent:

- the same command line (ianitor's flags; anything else is an error);
- the child is started first, then the service is registered with a TTL
  check and passed at once and every --heartbeat (default ttl/10) while the
  child lives;
- every catchable signal is forwarded to the child's PID, from a Python
  signal handler;
- when the child ends, the service is deregistered and the script exits 0.

One difference, on purpose: ianitor sends its TTL passes and deregistrations
as GET, which Consul 1.x refuses; this sends PUT, so that there is something
to measure. Nothing of svcwrap's (process groups, port checks, timeouts,
exit codes) is added.

    bench/svcbench -only latency,signals,stop -wrapper bin/svcwrap \
        -wrapper 'python3 bench/peers/ianitor.py'
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request


def parse(argv):
    if "--" not in argv:
        sys.exit("usage: ianitor.py [flags] SERVICE -- COMMAND [ARG...]")
    cut = argv.index("--")
    p = argparse.ArgumentParser(prog="ianitor.py")
    p.add_argument("--consul-agent", default="localhost")
    p.add_argument("--ttl", type=float, default=10.0)
    p.add_argument("--heartbeat", type=float)
    p.add_argument("--tags", action="append", default=[])
    p.add_argument("--id")
    p.add_argument("--address")
    p.add_argument("--port", type=int)
    p.add_argument("-v", action="count", default=0)
    p.add_argument("service")
    args = p.parse_args(argv[:cut])
    args.command = argv[cut + 1:]
    if not args.command:
        sys.exit("ianitor.py: no command after --")
    if args.heartbeat is None:
        args.heartbeat = args.ttl / 10
    if ":" not in args.consul_agent:
        args.consul_agent += ":8500"
    return args


def put(agent, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://" + agent + path, data=data, method="PUT")
    with urllib.request.urlopen(req) as resp:
        resp.read()


def main():
    args = parse(sys.argv[1:])
    service_id = args.id or args.service
    check_id = "service:" + service_id

    child = subprocess.Popen(args.command)

    def forward(signum, _frame):
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            pass

    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
            continue
        try:
            signal.signal(sig, forward)
        except (OSError, ValueError):
            pass  # not catchable here

    registration = {
        "ID": service_id,
        "Name": args.service,
        "Tags": args.tags,
        "Check": {"CheckID": check_id, "TTL": "%gs" % args.ttl},
    }
    if args.address:
        registration["Address"] = args.address
    if args.port:
        registration["Port"] = args.port
    put(args.consul_agent, "/v1/agent/service/register", registration)

    # As ianitor: pass, sleep a heartbeat, look whether the child still
    # lives. A child's end is noticed up to a heartbeat late.
    while child.poll() is None:
        try:
            put(args.consul_agent, "/v1/agent/check/pass/" + check_id)
        except OSError:
            pass  # ianitor carries on; the next heartbeat may work
        time.sleep(args.heartbeat)

    put(args.consul_agent, "/v1/agent/service/deregister/" + service_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
