"""`python -m mmdit_scale` is the same CLI as `mmdit-scale`."""
import sys

from launcher.cli import main

sys.exit(main())
