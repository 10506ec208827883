"""``python -m senet.cli`` (used by ``torchrun -m senet.cli train ...``)."""

import sys

from . import main

sys.exit(main())
