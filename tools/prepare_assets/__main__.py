import sys

from tools.prepare_assets.prepare import main

sys.exit(main())
