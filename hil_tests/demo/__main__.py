"""`python -m hil_tests.demo`: see hil_tests/demo/run.py."""

import sys

from hil_tests.demo.run import main

sys.exit(main())
