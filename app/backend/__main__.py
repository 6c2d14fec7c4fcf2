"""``python -m app.backend [--port P ...]``: ``llmqp backend`` without the ``llmqp`` script.

The service lives in :mod:`app.serving` and its measurements in :mod:`app.measure`; this entry
point keeps the documented module name.
"""

import sys

from app.cli.backend import main

sys.exit(main())
