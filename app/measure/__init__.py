"""Server side only: time real kernels at real shapes, store the timings, fit the cost model.

Never imported by the browser build, nor by ``app.model`` / ``app.router``. Importing this
package is cheap: submodules (and ``torch``, only in ``kernels_torch``) load on first use.

* :mod:`.kernels`, :mod:`.kernels_numpy`, :mod:`.kernels_torch` — one file per kernel backend
* :mod:`.timing` — warm-up, repeats, median and spread
* :mod:`.store` — SQLite results, one transaction per measurement
* :mod:`.limits` — bounds on every sweep parameter
* :mod:`.sweeps`, :mod:`.answers` — what to measure, and the answer beside the model
* :mod:`.calibration`, :mod:`.modelled` — fit a ``Hardware`` profile; per-plan model error
* :mod:`.measured` — ``measured_latency`` for the router
* :mod:`.jobs` — one measurement at a time on the device, pollable progress
* :mod:`.check` — the GPU (or CPU) check behind ``bench/gpu_check.sh``
"""
