"""python -m minitl: the same as the minitl command."""
import sys

from minitl.cli import main

sys.exit(main())
