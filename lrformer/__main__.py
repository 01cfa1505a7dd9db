"""``python -m lrformer`` (also what ``torchrun -m lrformer`` runs)."""

import sys

from lrformer.cli.main import main

sys.exit(main())
