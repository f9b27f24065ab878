import sys

from acmelb.cli import run

sys.exit(run())
