"""``python -m funnelkvs.cli``: the same as the ``funnelkvs`` console script."""

import sys

from funnelkvs.cli import main

if __name__ == "__main__":
    sys.exit(main())
