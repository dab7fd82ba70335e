"""`python -m tools.convert_weights SRC OUT [...]`: see `tools.convert_weights.cli`."""

import sys

from tools.convert_weights.cli import main

if __name__ == "__main__":
    sys.exit(main())
