"""Server side only: the HTTP service on Tornado — the measurement API and the OpenAI-compatible
decoding endpoint — and its client.

* :mod:`.guard` — access rules and request bounds every request passes first
* :mod:`.http_base` — the JSON handler base
* :mod:`.service` — the measurement endpoints and the server
* :mod:`.decoding`, :mod:`.openai_api` — the engine inside the service, ``/v1/*``
* :mod:`.client` — a client, and an in-process service for the Panel server

``llmqp backend`` (or ``python -m app.backend``) runs the service.
"""
