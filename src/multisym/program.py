"""The ``multisym`` program: a workflow job's command, run in a worker of the
run's warm-start server when there is one (``warm``, off with
``warm_starts: false``), else here in this fresh process (``cli``)."""

from __future__ import annotations


def program() -> None:
    from multisym import cli
    from multisym import warm

    warm.delegate()  # returns when no server takes the command
    cli.main()
