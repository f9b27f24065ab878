import sys

from acmelb.cli import main

sys.exit(main())
