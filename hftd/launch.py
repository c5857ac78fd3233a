"""The `hftd` command's first steps, before the heavy imports (see hftd.lifeline): an agent
binds itself to its supervisor, `hftd run` starts catching stop signals and keeps numpy's
OpenBLAS from starting a thread pool (hftd.forkserver forks only a one-thread supervisor;
no agent does linear algebra worth a thread on a shared core)."""

import os
import sys


def main() -> None:
    if sys.argv[1:2] == ["agent"]:
        from .lifeline import bind_to_supervisor

        bind_to_supervisor(sys.argv)
    elif sys.argv[1:2] == ["run"]:
        from .lifeline import catch_early_signals

        catch_early_signals()
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from .cli import main as cli_main

    cli_main()
