"""`python -I -m reconciler.github COMMAND`: the pull-request comment's helpers, for action.yml."""

import sys

from .comment import main

sys.exit(main())
