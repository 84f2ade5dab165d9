"""`python -m orchestration.cli` (what `collab-iu` runs)."""

import sys

from orchestration.cli.main import main

sys.exit(main())
