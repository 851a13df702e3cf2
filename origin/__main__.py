"""``python -m origin`` is the ``origin`` command."""

import sys

from origin.cli import main

sys.exit(main())
