"""``python -m zoo``: the same as the ``zoo`` command."""

import sys

try:
    from zoo.cli import main
except KeyboardInterrupt:  # Ctrl-C while torch loads: one line, no traceback
    print("interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
