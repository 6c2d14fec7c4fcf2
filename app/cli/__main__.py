"""``python -m app.cli``: the same as ``llmqp``."""

import sys

from .main import main

sys.exit(main())
