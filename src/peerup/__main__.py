"""Entry point for ``python -m peerup``."""

import sys

from peerup.cli import main

sys.exit(main())
