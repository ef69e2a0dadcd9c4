"""``python -m peer --room demo``: see ``peer.cli``."""

import sys

from peer.cli import main

if __name__ == "__main__":
    sys.exit(main())
