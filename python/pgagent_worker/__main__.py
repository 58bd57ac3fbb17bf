"""``python -m pgagent_worker worker ...`` (the same as the ``pgagent`` console script)."""

import sys

from .cli import main

sys.exit(main())
