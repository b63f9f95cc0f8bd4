"""`python -m focusfuse`: the command line, as the `focusfuse` command."""

from .cli import main

main()
