import sys

from acmelb.cli.main import run

sys.exit(run())
