"""Server mode only: attach to a measurement backend and draw measured timings over the model.

Never imported in Pyodide (``app.widgets.app`` imports it only when not running there), and
``app.serving`` is imported only inside functions here, so the browser build can leave it out.

The backend is reached by URL (``LLMQP_BACKEND_URL`` or the text box) or started in-process
(``app.serving.client.start_in_process()``) when no URL is given. "Measure" runs a head sweep at
the scenario's head shape and an amortized sweep of a small body in a worker thread, polling the
backend's progress, so the page stays live. "Measure K* over batch" runs the head sweep at
each batch of :func:`batch_grid` (each sequence gathers its own K rows; the dense head reads the
weights once for all B), so Figure 1 shows the measured K* at each B beside the model's, and
moving the Batch slider shows that batch's measured points. Results (dicts as
``app.measure.sweeps.Runner.result`` returns them) are drawn as scatter over Figures 1–2, and the
backend's calibrated profile becomes the ``calibrated`` hardware choice, so the curves are then
the calibrated model. If the backend is unreachable a banner says so and the app keeps working on
the model alone.
"""

from __future__ import annotations

import html
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import panel as pn

from app.model import k_grid

from .controls import hooked
from .measured_answers import (
    BATCHES,
    batch_grid,
    body_points,
    calibrated_hardware,
    head_key,
    head_points,
    kstar_by_batch,
    measured_notes,
    same_head,
)

__all__ = [
    "MeasuredPanel",
    "head_points",
    "body_points",
    "calibrated_hardware",
    "served_scenario",
    "apply_served_scenario",
    "body_layers",
    "measured_notes",
    "kstar_by_batch",
    "batch_grid",
    "BODY_LAYERS",
    "BATCHES",
]

log = logging.getLogger(__name__)

#: Fewest layers the amortized sweep times; it times the scenario's own depth when that fits
#: the backend's memory budget of one request, else the most layers that do.
BODY_LAYERS = 2
#: Contexts of the amortized sweep (the backend's default).
BODY_CONTEXT = (0, 64, 256, 1024)
#: K values of one head sweep.
HEAD_POINTS = 12
#: SmolLM2-135M-Instruct, the model ``llmqp serve`` decodes (its public model card; the GGUF's
#: own metadata replaces it when the file is here): Scenario fields through the engine's bridge.
SMOLLM2 = {"d": 576, "layers": 30, "vocab": 49_152}


def served_scenario() -> dict:
    """State values for server mode: the scenario of the model the server decodes (SmolLM2-135M:
    d 576, |V| 49,152, its body's proportions), on this CPU (the generic ``cpu`` preset until
    a measurement calibrates it) in float32, what numpy times. The shape is read from the GGUF's
    metadata (``app.measure.llama.served_config``) when the model file is here; otherwise the
    model card's shape is used and ``served`` says the file is missing."""
    from app.measure.llama import llama_config, scenario_fields, served_config

    cfg, where = served_config()
    if cfg is None:
        cfg = llama_config(SMOLLM2["d"], SMOLLM2["layers"], SMOLLM2["vocab"])
        note = f"SmolLM2-135M's shape (the model file is not here: {where})"
    else:
        note = f"{where}, the model this server decodes"
    f = scenario_fields(cfg)
    body = {n: f[n] for n in ("layers", "ffn_mult", "kv_share", "mlp_matrices")}
    note += (
        f": d {cfg.d}, |V| {cfg.vocab:,}, {cfg.n_layers} layers, MLP {cfg.d_ff}, "
        f"{cfg.n_kv_heads} of {cfg.n_heads} heads for keys/values; this CPU, float32"
    )
    return {"d": f["d"], "vocab": f["vocab"], "dtype": "float32", "hardware": "cpu",
            "body": body, "served": note}  # fmt: skip


def apply_served_scenario(state) -> None:
    """Start ``state`` on :func:`served_scenario` (a shared link's values are applied after)."""
    values = served_scenario()
    state.param.update(**{k: v for k, v in values.items() if k != "k"})


def body_layers(s, limits: dict) -> int:
    """Layers of the amortized sweep for scenario ``s``: its own depth when the sweep fits the
    backend's memory budget of one request (``limits``, as ``GET /v1/device`` lists them),
    else the most that fit (at least 1; 0 when not even one does)."""
    from app.measure.limits import amortized_sweep_bytes

    budget = int((limits or {}).get("max_request_bytes") or 1 << 30)
    for layers in range(s.layers, 0, -1):
        need = amortized_sweep_bytes(
            s.d, layers, s.vocab, s.batch, s.dtype, s.k, max(BODY_CONTEXT), s.rerank_r
        )
        if need <= budget:
            return layers
    return 0


def _errors() -> tuple:
    """Exceptions that mean "no backend, or it refused": the app then keeps to the model."""
    try:
        from app.serving.client import BackendError, BackendUnavailable
    except ImportError:
        return (ConnectionError, OSError)
    return (BackendUnavailable, BackendError, ConnectionError, OSError)


_IN_PROCESS: dict = {}
_WORKER: list = []


def _worker() -> ThreadPoolExecutor:
    """One thread for measurements (the backend times one sweep at a time anyway)."""
    if not _WORKER:
        _WORKER.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmqp-measure"))
    return _WORKER[0]


def in_process_url() -> str:
    """URL of this server process's in-process backend, started on first use and shared by
    every session (results in memory, so every page sees every measurement)."""
    if "url" not in _IN_PROCESS:
        from app.serving.client import start_in_process

        origin = os.environ.get("LLMQP_APP_ORIGIN")  # set by `llmqp serve`
        origins = [origin, origin.replace("127.0.0.1", "localhost")] if origin else None
        from app.serving.decoding import engine_loader

        # the model loads on the first decode only (the Decode panel), once per process
        _IN_PROCESS["url"], _IN_PROCESS["stop"] = start_in_process(
            allow_origins=origins, engine=engine_loader()
        )
    return _IN_PROCESS["url"]


class MeasuredPanel(pn.viewable.Viewer):
    """Backend connection, the Measure button with its progress bar, and the banner.

    Hooks: ``backend_url_input``, ``connect_button``, ``measure_button``,
    ``measure_batch_button``, ``measure_progress``, ``backend_banner``, ``backend_device``,
    ``measured_toggle``. Head answers are kept per head shape and batch (:attr:`heads`), so the
    Batch slider shows each measured batch's points again.
    """

    def __init__(self, app, client=None):
        super().__init__()
        self.app, self.state = app, app.state
        self.client = None
        self.body = None
        self.heads: dict = {}  # (d, vocab, batch, dtype) -> head answer
        self.info, self.rows, self._job = {}, [], None
        self._future = self._poller = None
        self._partial: list = []  # head answers the worker has finished, not drawn yet
        self.body_note = ""
        self.url = hooked(
            pn.widgets.TextInput,
            "backend_url_input",
            label="Backend URL (empty: start one in-process)",
            value=os.environ.get("LLMQP_BACKEND_URL", ""),
        )
        self.connect_button = hooked(pn.widgets.Button, "connect_button", label="Connect")
        self.measure_button = hooked(
            pn.widgets.Button,
            "measure_button",
            label="Measure",
            color="success",
            disabled=True,
        )
        self.batch_button = hooked(
            pn.widgets.Button,
            "measure_batch_button",
            label="Measure K* over batch",
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
        self.batch_button.on_click(lambda e: self.measure(batches=True))
        self.state.param.watch(self.show, ["d", "vocab", "batch", "dtype", "k"])
        self.connect(client)

    # -- connection --------------------------------------------------------------------------

    def connect(self, client=None) -> bool:
        """Use ``client``, else the URL box's backend, else the in-process one."""
        try:
            if client is None:
                from app.serving.client import BackendClient

                client = BackendClient(self.url.value.strip() or in_process_url())
            self.info = client.device() or {}
            self.rows = client.results()
        except (*_errors(), ImportError, ValueError) as exc:
            self.client = None
            self._fail(f"Measurement backend unavailable ({exc}); showing the model only.")
            return False
        self.client = client
        self.banner.visible = False
        self.measure_button.disabled = self.batch_button.disabled = False
        self.latency_toggle.disabled = not self.rows
        self.device.object = "<small>" + html.escape(_describe(self.info)) + "</small>"
        if self.state.served:
            self.device.object += (
                "<br><small>Started on the served model's scenario: "
                f"{html.escape(self.state.served)}.</small>"
            )
        return True

    def _fail(self, message: str) -> None:
        log.warning(message)
        self.banner.object = html.escape(message)
        self.banner.visible = True
        self.measure_button.disabled = self.batch_button.disabled = self.client is None

    # -- measuring -----------------------------------------------------------------------------

    def run_sweeps(self, s) -> tuple[dict, dict | None, list]:
        """Blocking: the head sweep at ``s``'s head shape (over the memory budget the backend
        measures it in row blocks), then the amortized sweep of the engine's body at ``s``'s
        depth, or the most layers that fit (:func:`body_layers`), then every stored row (for
        the router's measured latencies). The head's answer is kept at once (:attr:`_partial`)
        so it is drawn before the body is done; a body that cannot be measured leaves a note,
        not a failure."""
        kw = dict(batch=s.batch, dtype=s.dtype, on_progress=self._on_job)
        ks = k_grid(s.vocab, HEAD_POINTS).tolist()
        head = self.client.sweep_head(s.d, s.vocab, k=ks, **kw)
        self._partial.append(head)
        layers, body = body_layers(s, self.info.get("limits") or {}), None
        if layers == 0:  # not even one layer beside this head fits: ask, the backend decides
            layers = min(BODY_LAYERS, s.layers)
        if layers < s.layers:
            self.body_note = (
                f"body: {layers} of the scenario's {s.layers} layers, the most that fit "
                "the memory budget of one request (the model prices the rest)"
            )
        try:
            body = self.client.sweep_amortized(s.d, layers, s.vocab, k=s.k, **kw)
        except (*_errors(), ValueError) as exc:
            self.body_note = f"body not measured: {exc}"
        return head, body, self.client.results()

    def run_batch_sweeps(self, s, batches) -> tuple[dict, dict | None, list]:
        """Blocking: the head sweep at ``s``'s head shape at every batch in ``batches`` (each
        answer kept at once, :attr:`_partial`, to be drawn while the next runs), then every
        stored row. Returns the answer at ``s.batch`` (else the first), the body answer kept
        from before (this sweeps no body), the rows."""
        ks = k_grid(s.vocab, HEAD_POINTS).tolist()
        here = None
        for b in batches:
            head = self.client.sweep_head(
                s.d, s.vocab, k=ks, batch=b, dtype=s.dtype, on_progress=self._on_job
            )
            self._partial.append(head)
            if b == s.batch or here is None:
                here = head
        return here, self.body, self.client.results()

    def _on_job(self, job: dict) -> None:  # worker thread: only store it, the loop draws it
        self._job = job

    def _adopt_dtype(self) -> None:
        """Switch to a dtype the backend times (numpy: float32 only), saying so."""
        dtypes = list(self.info.get("dtypes") or [])
        if dtypes and self.state.dtype not in dtypes:
            self.device.object += (
                f"<br><small>{html.escape(self.state.dtype)} is not timed by this backend: "
                f"switched to {html.escape(dtypes[0])}.</small>"
            )
            self.state.dtype = dtypes[0]

    def measure(self, event=None, batches=None) -> bool:
        """Start both sweeps in a worker thread (``batches``: the head sweep at each batch of
        :func:`batch_grid` instead, or at the batches listed); :meth:`poll` (a session periodic
        callback under ``panel serve``, holding the document lock) follows the job and draws
        the answers, so the page stays live meanwhile. Returns False when there is nothing to
        start."""
        if self.client is None or self._future is not None:
            return False
        self._adopt_dtype()
        s = self.state.scenario
        self.measure_button.disabled = self.batch_button.disabled = True
        self.progress.value, self.progress.visible = -1, True
        self._job, self._partial = None, []
        if batches is None:
            self.body_note = ""
            self._future = _worker().submit(self.run_sweeps, s)
        else:
            if batches is True:
                batches = batch_grid(s.batch, self.info.get("limits"))
            self._future = _worker().submit(self.run_batch_sweeps, s, list(batches))
        if pn.state.curdoc is not None:
            self._poller = pn.state.add_periodic_callback(self.poll, 250)
        return True

    def poll(self) -> bool:
        """Move the progress bar; once the sweeps are over, draw them or say why not.
        Returns True when no measurement is running any more."""
        future = self._future
        if future is None:
            return True
        job = self._job or {}
        done, total = job.get("done"), job.get("total")
        if isinstance(done, int) and isinstance(total, int) and total > 0:
            self.progress.value = int(100 * min(done / total, 1.0))
        drawn = bool(self._partial)
        while self._partial:  # heads measured so far: keep them (and draw them now)
            self.keep_head(self._partial.pop(0))
        if not future.done():
            if drawn:
                self.show()
            return False
        self._future = None
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        self.progress.visible = False
        self.measure_button.disabled = self.batch_button.disabled = self.client is None
        try:
            head, body, rows = future.result()
        except (*_errors(), ValueError, LookupError) as exc:
            self._fail(f"Measurement failed: {exc}")
            return True
        self.apply(head, body, rows)
        return True

    def keep_head(self, head: dict | None) -> None:
        """Keep a head answer under its shape and batch (a newer one replaces it)."""
        if head and "params" in head:
            self.heads[head_key(head)] = head

    def apply(self, head: dict | None, body: dict | None, rows: list | None = None) -> None:
        """Keep the answers, adopt the calibrated profile, and draw the measured points."""
        self.keep_head(head)
        self.body = body
        if rows is not None:
            self.rows = rows
        self.latency_toggle.disabled = not self.rows
        hw = calibrated_hardware(body) or calibrated_hardware(head)
        if hw is not None:
            self.state.set_calibration(hw)
        self.show()

    def latency_for(self, s):
        """Measured per-plan latencies for scenario ``s`` (``None`` where none apply): the
        router's stream then draws its costs from them (``app.measure.measured``)."""
        if not self.rows:
            return None
        from app.measure.measured import measured_latency

        try:
            return measured_latency(self.rows, s)
        except ValueError as exc:
            self._fail(f"Router stays on modelled latencies: {exc}")
            return None

    def show(self, *events) -> None:
        """Draw the stored answers that match the current head shape (else clear them)."""
        s = self.state.scenario
        head = self.heads.get((s.d, s.vocab, s.batch, s.dtype))
        note = measured_notes(head, self.body if same_head(self.body, s) else None,
                              self.body_note)  # fmt: skip
        self.app.crossover.set_measured(head_points(head), note)
        self.app.crossover.set_measured_kstar(kstar_by_batch(self.heads, s), s.batch)
        body = body_points(self.body, s.context) if same_head(self.body, s) else None
        self.app.amortization.set_measured(body)

    def __panel__(self):
        return pn.Column(
            self.banner,
            self.url,
            pn.Row(self.connect_button, self.measure_button, self.batch_button),
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
