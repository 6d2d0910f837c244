import sys

from resnas.cli import main

sys.exit(main())
