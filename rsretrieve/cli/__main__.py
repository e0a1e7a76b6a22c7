"""``python -m rsretrieve.cli ...``: the ``rsretrieve`` command."""

import sys

from rsretrieve.cli.entry import main

sys.exit(main())
