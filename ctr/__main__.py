"""``python -m ctr`` is the ``ctr`` command."""

from ctr.cli import main

main()
