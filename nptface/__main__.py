"""``python -m nptface``: the same command as ``nptface``."""

import sys

from nptface.cli import main

sys.exit(main())
