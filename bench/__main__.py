"""`python -m bench`: the benchmark by task (see bench/run.py)."""

import sys

from bench.run import main

sys.exit(main())
