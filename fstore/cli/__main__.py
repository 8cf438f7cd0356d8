"""``python -m fstore.cli``: the same entry point as the ``fstore`` script."""

import sys

from fstore.cli import main

sys.exit(main())
