"""``python -m napari_invert`` runs the command line."""

import sys

from napari_invert.cli import main

sys.exit(main())
