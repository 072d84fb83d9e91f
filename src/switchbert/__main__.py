"""``python -m switchbert ARGS`` runs the ``switchbert`` command."""

import sys

from switchbert.cli import main

if __name__ == "__main__":
    sys.exit(main())
