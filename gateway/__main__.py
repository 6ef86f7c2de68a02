"""python -m gateway: the same as roadside-gateway."""

import sys

from gateway.cli import main

sys.exit(main())
