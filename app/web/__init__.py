"""Build-time helpers for the static Pyodide site (used by ``build.py`` only).

Nothing here is imported by the app at run time, and the browser wheel leaves this package
out (see :mod:`app.web.wheels`).
"""
