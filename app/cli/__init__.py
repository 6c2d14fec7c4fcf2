"""``llmqp``: the command line. Argument wiring only; each command calls into its layer.

* :mod:`.main` — ``llmqp`` and ``bench``, ``explain``, ``serve``, ``export``
* :mod:`.engine` — ``model``, ``decode``, ``amortizer``, ``traces``
* :mod:`.backend` — ``backend`` (the HTTP service)
* :mod:`.lower` — ``lower`` (the compiler pass)
"""

from .main import main
