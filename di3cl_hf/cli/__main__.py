"""``python -m di3cl_hf.cli``: the same as the ``di3cl`` command."""

import sys

from . import main

sys.exit(main())
