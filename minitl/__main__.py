"""python -m minitl: the same as the minitl command."""
import sys

from .cli import main

sys.exit(main())
