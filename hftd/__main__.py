import sys

if sys.argv[1:2] == ["agent"]:  # before anything else: see hftd.lifeline
    from .lifeline import bind_to_supervisor

    bind_to_supervisor(sys.argv)

from .cli import main  # noqa: E402

main()
