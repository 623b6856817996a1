"""``python -m minisd3``: runs :func:`minisd3.cli.main` (every command and its argparse live in :mod:`minisd3.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
