"""`python -m bench`: the benchmark by task (what it measures: bench/__init__.py; its command: bench/run.py)."""

import sys

from bench.run import main

sys.exit(main())
