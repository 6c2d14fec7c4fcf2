"""``python -m app.backend [--port P ...]``: the measurement service without the ``llmqp`` CLI."""

import sys

from .cli import main

sys.exit(main())
