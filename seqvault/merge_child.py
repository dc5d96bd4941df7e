"""Entry point of the merge process: `python -m seqvault.merge_child` (seqvault/merge_proc.py).

A module of its own so that nothing imports it before `-m` runs it as `__main__`."""

import sys

from .merge_proc import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
