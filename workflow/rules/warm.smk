# Warm starts (multisym.warm): in a local run, every `multisym` job forks from
# one server that has imported torch and the plotting stack once, instead of
# importing them afresh; warm_starts: false turns this off. Runs on an executor
# plugin (SLURM) start no server: their jobs run elsewhere. Workflow attribute used:
# workflow.local_exec, whether this run executes its jobs on this host.
import re
import sys

import multisym.warm

WARM_SERVERS = []


def start_warm_starts(logs):
    """The server's log goes beside Snakemake's own log of the run. Without a
    server the jobs start cold, so failing to start one only costs time."""
    if config["warm_starts"] and workflow.local_exec and logs:
        log = re.sub(r"\.snakemake\.log$", "", logs[0]) + ".warm.log"
        try:
            WARM_SERVERS.append(multisym.warm.Server(log))
        except OSError as error:
            print(f"warm starts off, jobs start afresh: {error}", file=sys.stderr)


def stop_warm_starts():
    while WARM_SERVERS:
        WARM_SERVERS.pop().stop()
