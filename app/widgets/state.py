"""Every input of the app, declared once as bounded parameters (no Panel import here).

The numeric bounds are :data:`app.model.SCENARIO_LIMITS`, so a slider built from a parameter
cannot leave the region :class:`~app.model.Scenario` accepts. The one cross-field rule,
``1 ≤ K ≤ |V|``, is kept by a watcher that runs before any view: lowering |V| below K pulls K
down with it, and a K above |V| is clamped, so no reachable state fails validation. Likewise the
real-trace workload offers only the routers that run on it (a router that does not falls back
to LinUCB).
"""

from __future__ import annotations

import param

from app.model import DTYPES, PRESETS, SCENARIO_LIMITS, Hardware, Scenario
from app.router.experiment import DEFAULT_ALPHA
from app.router.registry import LEARNERS, REAL_ROUTERS

from .session import WORKLOADS
from .workload import real_workload

__all__ = [
    "ScenarioState",
    "CALIBRATED",
    "MODEL_PARAMS",
    "ROUTER_PARAMS",
    "REAL_RUN_PARAMS",
    "URL_PARAMS",
]

#: Hardware choice that stands for the backend's calibrated profile (server mode only).
CALIBRATED = "calibrated"

_DEFAULT = Scenario()
_L = SCENARIO_LIMITS


def _int(name, label, **kw):
    return param.Integer(getattr(_DEFAULT, name), bounds=_L[name], label=label, **kw)


def _float(name, label, **kw):
    return param.Number(getattr(_DEFAULT, name), bounds=_L[name], label=label, **kw)


class ScenarioState(param.Parameterized):
    """The scenario the figures show and the router run they animate.

    ``scenario`` builds the validated :class:`~app.model.Scenario`; everything else in the app
    reads numbers from ``app.model`` / ``app.router`` through it.
    """

    d = _int("d", "Model width d")
    vocab = _int("vocab", "Vocabulary |V|")
    k = param.Integer(_DEFAULT.k, bounds=(1, _L["vocab"][1]), label="Legal tokens K (≤ |V|)")
    batch = _int("batch", "Batch")
    dtype = param.Selector(default=_DEFAULT.dtype, objects=list(DTYPES), label="dtype")
    hardware = param.Selector(default=_DEFAULT.hardware, objects=list(PRESETS), label="Hardware")
    tau = _float("tau", "Refine threshold τ")
    lam = _float("lam", "Latency weight λ")
    eps = _float("eps", "Amortized logit error ε")
    decode_length = _int("decode_length", "Decode length N")
    seed = _int("seed", "Seed")
    horizon = _int("horizon", "Router steps T", softbounds=(1_000, 100_000))
    router = param.Selector(default="linucb", objects=list(LEARNERS), label="Router")
    compare = param.ListSelector(default=[], objects=list(LEARNERS), label="Compare with")
    alpha = param.Number(DEFAULT_ALPHA, bounds=(0.0, 100.0), softbounds=(0.0, 2.0), label="α")
    drift = param.Boolean(False, label="Drifting costs")
    measured_latency = param.Boolean(False, label="Train on measured latencies")
    workload = param.Selector(
        default="synthetic",
        objects={label: value for value, label in WORKLOADS.items()},
        label="Workload",
        doc="The synthetic environment, or the shipped real trace (SmolLM2-135M on this CPU).",
    )
    calibration = param.ClassSelector(
        class_=Hardware, default=None, allow_None=True, doc="Calibrated profile (server mode)."
    )
    body = param.Dict(
        default={},
        doc="Scenario fields of the body beyond the sliders (layers, ffn_mult, kv_share, "
        "mlp_matrices); empty: Scenario()'s Llama-3-8B proportions. Server mode sets the "
        "served model's (app.widgets.measured.served_scenario).",
    )
    served = param.String(
        default="", doc="Server mode: the model whose scenario the app started on (a note)."
    )

    def __init__(self, **params):
        super().__init__(**params)
        # Registered before any view's watcher, so views always see the clamped K.
        self.param.watch(self._keep_k_legal, ["k", "vocab"])
        self.param.watch(self._keep_routers_runnable, "workload")
        self._keep_k_legal()
        self._keep_routers_runnable()

    def _keep_k_legal(self, *events) -> None:
        if self.k > self.vocab:
            self.k = self.vocab

    def _keep_routers_runnable(self, *events) -> None:
        choices = list(REAL_ROUTERS if self.workload == "real" else LEARNERS)
        self.param.router.objects = choices
        self.param.compare.objects = choices
        updates = {}
        if self.router not in choices:
            updates["router"] = "linucb"
        compare = [c for c in self.compare if c in choices]
        if compare != list(self.compare):
            updates["compare"] = compare
        if updates:
            self.param.update(updates)

    def set_calibration(self, hardware: Hardware | None) -> None:
        """Offer (or withdraw) the backend's calibrated profile as a hardware choice."""
        presets = list(PRESETS)
        self.param.hardware.objects = presets + ([CALIBRATED] if hardware is not None else [])
        if hardware is not None:
            self.param.update(calibration=hardware, hardware=CALIBRATED)
        elif self.hardware == CALIBRATED:
            self.param.update(calibration=None, hardware=_DEFAULT.hardware)
        else:
            self.calibration = None

    @property
    def hardware_profile(self) -> str | Hardware:
        if self.hardware == CALIBRATED and self.calibration is not None:
            return self.calibration
        return self.hardware if self.hardware != CALIBRATED else _DEFAULT.hardware

    @property
    def scenario(self) -> Scenario:
        """The validated :class:`~app.model.Scenario` of the current values (the body keeps
        the proportions of :attr:`body` — ``Scenario()``'s Llama-3-8B ones unless set — which
        scale with ``d``). On the real trace the
        margin law is the one fitted to the trace's margins (:func:`.workload.real_workload`)."""
        margins = {}
        if self.workload == "real":
            fit = real_workload()["fit"]
            margins = {"margin_a": fit["margin_a"], "margin_b": fit["margin_b"]}
        return Scenario(
            **self.body,
            d=self.d,
            vocab=self.vocab,
            k=min(self.k, self.vocab),
            batch=self.batch,
            dtype=self.dtype,
            hardware=self.hardware_profile,
            tau=self.tau,
            lam=self.lam,
            eps=self.eps,
            decode_length=self.decode_length,
            seed=self.seed,
            horizon=self.horizon,
            **margins,
        )

    def apply_query(self, values: dict) -> list[str]:
        """Set what is valid of ``values`` (e.g. from a shared URL), one at a time, |V| before K.

        Returns the names that were rejected; the state stays valid whatever the input.
        """
        rejected = []
        order = sorted(values, key=lambda name: name == "k")
        for name in order:
            try:
                setattr(self, name, values[name])
            except (ValueError, TypeError):
                rejected.append(name)
        return rejected


#: Parameters that change Figures 1–2 and the plan table.
MODEL_PARAMS = (
    "d",
    "vocab",
    "k",
    "batch",
    "dtype",
    "hardware",
    "calibration",
    "tau",
    "eps",
    "decode_length",
    "workload",
    "body",
)
#: Parameters that restart the router run.
ROUTER_PARAMS = (
    *MODEL_PARAMS,
    "lam",
    "seed",
    "horizon",
    "router",
    "alpha",
    "drift",
    "measured_latency",
)
#: Of those, what the router run on the real trace depends on (the trace fixes the rest).
REAL_RUN_PARAMS = ("workload", "seed", "horizon", "router")
#: State parameter -> URL query key (short keys keep shared links readable).
URL_PARAMS = {
    "d": "d",
    "vocab": "V",
    "k": "K",
    "batch": "batch",
    "dtype": "dtype",
    "hardware": "hw",
    "tau": "tau",
    "lam": "lam",
    "eps": "eps",
    "decode_length": "N",
    "seed": "seed",
    "horizon": "T",
    "router": "router",
    "compare": "compare",
    "alpha": "alpha",
    "drift": "drift",
    "workload": "workload",
}
