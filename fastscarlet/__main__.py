import sys

from fastscarlet.cli import main

sys.exit(main())
