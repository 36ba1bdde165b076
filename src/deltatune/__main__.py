"""`python -m deltatune ...` is the same as the `deltatune` command."""

import sys

from deltatune.cli import main

sys.exit(main())
