"""Server mode only: attach to a measurement backend and draw measured timings over the model.

Never imported in Pyodide (``app.widgets.app`` imports it only when not running there), and
``app.backend`` is imported only inside functions here, so the browser build can leave it out.

The backend is reached by URL (``LLMQP_BACKEND_URL`` or the text box) or started in-process
(``app.backend.client.start_in_process()``) when no URL is given. "Measure" runs a head sweep at
the scenario's head shape and an amortized sweep of a small body in a worker thread, polling the
backend's progress, so the page stays live. Results (dicts as ``app.backend.sweeps.Runner.result``
returns them) are drawn as scatter over Figures 1–2, and the backend's calibrated profile becomes
the ``calibrated`` hardware choice, so the curves are then the calibrated model. If the backend is
unreachable a banner says so and the app keeps working on the model alone.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os

import numpy as np
import panel as pn

from app.model import Hardware, k_grid

from .controls import hooked

__all__ = ["MeasuredPanel", "head_points", "body_points", "calibrated_hardware", "BODY_LAYERS"]

log = logging.getLogger(__name__)

#: Layers of the small transformer the amortized sweep times (the backend bounds its memory).
BODY_LAYERS = 2
#: K values of one head sweep.
HEAD_POINTS = 12


def _errors() -> tuple:
    """Exceptions that mean "no backend" (``BackendUnavailable`` once app.backend has it)."""
    try:
        from app.backend.client import BackendUnavailable
    except ImportError:
        return (ConnectionError, OSError)
    return (BackendUnavailable, ConnectionError, OSError)


def head_points(answer: dict | None) -> dict | None:
    """``{"k", "dense_s", "sparse_s"}`` (measured medians) of a head-sweep answer."""
    if not answer or "plans" not in answer:
        return None
    plans = answer["plans"]
    return {
        "k": list(answer["k"]),
        "dense_s": list(plans["dense_head"]["median_s"]),
        "sparse_s": list(plans["sparse_head"]["median_s"]),
    }


def body_points(answer: dict | None, context: int) -> dict | None:
    """Measured and modelled seconds of the amortized and the full step at the swept context
    nearest ``context``, and the measured crossover length."""
    if not answer or "plans" not in answer:
        return None
    ctx = np.asarray(answer["context"])
    i = int(np.argmin(np.abs(ctx - context)))
    plans = answer["plans"]
    return {
        "context": int(ctx[i]),
        "amortized_s": float(plans["amortized_step"]["median_s"][i]),
        "full_s": float(plans["full_step"]["median_s"][i]),
        "amortized_model_s": float(plans["amortized_step"]["model_s"][i]),
        "full_model_s": float(plans["full_step"]["model_s"][i]),
        "n_star": (answer.get("crossover") or {}).get("measured_n"),
    }


def calibrated_hardware(answer: dict | None) -> Hardware | None:
    """The calibrated profile an answer carries, ``None`` while the backend has only a preset."""
    hw = (answer or {}).get("hardware") or {}
    if hw.get("source") != "calibrated" or not hw.get("profile"):
        return None
    return Hardware.from_dict(hw["profile"])


def _same_head(answer: dict | None, s) -> bool:
    p = (answer or {}).get("params") or {}
    return (p.get("d"), p.get("vocab"), p.get("batch")) == (s.d, s.vocab, s.batch)


class MeasuredPanel(pn.viewable.Viewer):
    """Backend connection, the Measure button with its progress bar, and the banner.

    Hooks: ``backend_url_input``, ``connect_button``, ``measure_button``, ``measure_progress``,
    ``backend_banner``, ``backend_device``, ``measured_toggle``.
    """

    def __init__(self, app, client=None):
        super().__init__()
        self.app, self.state = app, app.state
        self.client = None
        self.head = self.body = None
        self.url = hooked(
            pn.widgets.TextInput,
            "backend_url_input",
            name="Backend URL (empty: start one in-process)",
            value=os.environ.get("LLMQP_BACKEND_URL", ""),
        )
        self.connect_button = hooked(pn.widgets.Button, "connect_button", name="Connect")
        self.measure_button = hooked(
            pn.widgets.Button,
            "measure_button",
            name="Measure",
            button_type="success",
            disabled=True,
        )
        self.progress = hooked(
            pn.indicators.Progress,
            "measure_progress",
            value=0,
            max=100,
            visible=False,
            sizing_mode="stretch_width",
        )
        self.banner = hooked(
            pn.pane.HTML,
            "backend_banner",
            visible=False,
            styles={"background": "#fde2e1", "padding": "4px 8px", "border-radius": "4px"},
        )
        self.device = hooked(pn.pane.HTML, "backend_device", object="")
        self.latency_toggle = hooked(
            pn.widgets.Checkbox,
            "measured_toggle",
            param_ref=self.state.param.measured_latency,
            disabled=True,
        )
        self.connect_button.on_click(lambda e: self.connect())
        self.measure_button.on_click(self.measure)
        self.state.param.watch(self.show, ["d", "vocab", "batch", "k"])
        self.connect(client)

    # -- connection --------------------------------------------------------------------------

    def connect(self, client=None) -> bool:
        """Use ``client``, else the URL box's backend, else start one in-process."""
        try:
            if client is None:
                from app.backend import client as backend

                url = self.url.value.strip()
                client = backend.BackendClient(url) if url else backend.start_in_process()
            info = client.device()
        except (*_errors(), ImportError) as exc:
            self.client = None
            self._fail(f"Measurement backend unavailable ({exc}); showing the model only.")
            return False
        self.client = client
        self.banner.visible = False
        self.measure_button.disabled = False
        self.device.object = "<small>" + html.escape(_describe(info)) + "</small>"
        return True

    def _fail(self, message: str) -> None:
        log.warning(message)
        self.banner.object = html.escape(message)
        self.banner.visible = True
        self.measure_button.disabled = self.client is None

    # -- measuring -----------------------------------------------------------------------------

    def run_sweeps(self, s) -> tuple[dict, dict]:
        """Blocking: the head sweep at ``s``'s head shape and the small-body amortized sweep."""
        dtype = self._dtype(s.dtype)
        head = self.client.sweep_head(
            s.d, s.vocab, s.batch, dtype, k=k_grid(s.vocab, HEAD_POINTS).tolist()
        )
        body = self.client.sweep_amortized(
            d=s.d, layers=BODY_LAYERS, vocab=s.vocab, k=s.k, batch=s.batch, dtype=dtype
        )
        return head, body

    def _dtype(self, dtype: str) -> str:
        """The scenario's dtype if the backend times it, else its first one (numpy: float32)."""
        try:
            dtypes = list((self.client.device() or {}).get("dtypes") or [])
        except _errors():
            dtypes = []
        return dtype if not dtypes or dtype in dtypes else dtypes[0]

    async def measure(self, event=None) -> bool:
        """Run both sweeps off the event loop, polling progress; then draw them."""
        if self.client is None:
            return False
        s = self.state.scenario
        self.measure_button.disabled = True
        self.progress.value, self.progress.visible = -1, True
        poll = pn.state.add_periodic_callback(self._poll, 300) if pn.state.curdoc else None
        try:
            loop = asyncio.get_running_loop()
            head, body = await loop.run_in_executor(None, self.run_sweeps, s)
        except (*_errors(), ValueError, LookupError) as exc:
            self._fail(f"Measurement failed: {exc}")
            return False
        finally:
            if poll is not None:
                poll.stop()
            self.progress.visible = False
            self.measure_button.disabled = self.client is None
        self.apply(head, body)
        return True

    def _poll(self) -> None:
        try:
            p = self.client.progress()
        except _errors():
            return
        done, total = (p.get("done"), p.get("total")) if isinstance(p, dict) else (p, 1)
        if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total:
            self.progress.value = int(100 * min(max(done / total, 0.0), 1.0))

    def apply(self, head: dict | None, body: dict | None) -> None:
        """Keep the answers, adopt the calibrated profile, and draw the measured points."""
        self.head, self.body = head, body
        hw = calibrated_hardware(body) or calibrated_hardware(head)
        if hw is not None:
            self.state.set_calibration(hw)
        self.latency_toggle.disabled = self._latency() is None
        self.show()

    def _latency(self):
        """Per-plan measured latency function for the router, once app.backend offers one."""
        try:
            from app.backend.measured import measured_latency
        except ImportError:
            return None
        try:
            fn = measured_latency(self.state.scenario, self.head, self.body)
        except (TypeError, ValueError) as exc:
            log.warning("measured latencies unavailable: %s", exc)
            return None
        self.app.latency = fn
        return fn

    def show(self, *events) -> None:
        """Draw the stored answers that match the current head shape (else clear them)."""
        s = self.state.scenario
        match = _same_head(self.head, s)
        self.app.crossover.set_measured(head_points(self.head) if match else None)
        body = body_points(self.body, s.context) if _same_head(self.body, s) else None
        self.app.amortization.set_measured(body)

    def __panel__(self):
        return pn.Column(
            self.banner,
            self.url,
            pn.Row(self.connect_button, self.measure_button),
            self.progress,
            self.device,
            self.latency_toggle,
            sizing_mode="stretch_width",
        )


def _describe(info) -> str:
    if not isinstance(info, dict):
        return str(info)
    keys = ("device", "device_name", "name", "impl", "preset")
    parts = [f"{k}: {info[k]}" for k in keys if info.get(k)]
    return "Backend " + (", ".join(parts) if parts else "connected")
