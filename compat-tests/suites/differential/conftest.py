"""The differential suite: each scenario runs against the broker under test (AMQP_URL) and a
reference broker (REFERENCE_URL), and what the client observed must be the same.

Without REFERENCE_URL every scenario is skipped. To run it:

    compat-tests/run.sh --broker warren --reference rabbitmq --suite differential
"""

import os
import sys

# Scenario modules and the harness live beside this file; pytest's importlib mode does not put
# this directory on sys.path by itself.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
