"""``python -m dsrt`` is the ``dsrt`` command."""

import sys

from .cli import main

sys.exit(main())
