"""Only the entry point ``python -m app.backend`` (see ``__main__``): the service is
:mod:`app.serving`, measurement and calibration :mod:`app.measure`."""
