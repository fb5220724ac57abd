"""``python -m gesture_apps.cli``: the ``gesture`` command without the console script."""

import sys

from gesture_apps.cli import main

sys.exit(main())
