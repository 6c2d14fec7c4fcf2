"""Sweeps: which points to measure, measuring the missing ones, and the answer beside the model.

A sweep is plain validated data (:class:`HeadSweep`, :class:`AmortizedSweep`); a :class:`Runner`
binds a kernel backend, a result store and a timing configuration, measures what the store lacks
(every point, with ``force``) one point per transaction, and assembles the answer from the store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from ..model import get_hardware, k_grid
from ..model.validate import check_choice, check_int
from .answers import body_answer, head_answer
from .calibration import Calibration, calibrate
from .kernels import preset_for
from .limits import (
    Limits,
    amortized_sweep_bytes,
    check_budget,
    head_bytes,
    head_sweep_bytes,
    int_list,
    model_bytes,
    parse_fields,
)
from .llama import model_weights, served_config
from .modelled import model_seconds, stored_name
from .store import Point, ResultStore
from .timing import TimingConfig, default_timing, measure

__all__ = ["HeadSweep", "AmortizedSweep", "Runner"]


@dataclass(frozen=True)
class HeadSweep:
    """Dense vs sparse head at one shape over the K values ``k`` (ascending, distinct).

    ``blocks > 1``: the head is too large for one request's memory budget, so it is measured in
    ``blocks`` row blocks of ``rows`` rows (the last may be shorter): the dense head's time is
    ``blocks`` times one block's; the sparse head gathers its K rows from one block, in
    ``ceil(K / rows)`` pieces when K exceeds a block (times summed).
    """

    d: int
    vocab: int
    batch: int = 1
    dtype: str = "float32"
    k: tuple = ()
    force: bool = False
    seed: int = 0
    blocks: int = 1

    @property
    def rows(self) -> int:
        """Rows of one block (all of |V| when ``blocks == 1``)."""
        return -(-self.vocab // self.blocks)

    def pieces(self, k: int) -> int:
        """Pieces the sparse head at ``k`` runs in (1 unless K exceeds a block)."""
        return -(-k // self.rows)

    @classmethod
    def parse(cls, body, dtypes, limits: Limits | None = None) -> HeadSweep:
        """Validate a request object ``{"d", "vocab", "batch", "dtype", "k": [...]}``."""
        limits = limits or Limits()
        f = parse_fields(
            body,
            {"d": None, "vocab": None},
            {"batch": 1, "dtype": dtypes[0], "k": None, "force": False, "seed": 0},
        )
        d = check_int("d", f["d"], *limits.d)
        vocab = check_int("vocab", f["vocab"], *limits.vocab)
        dtype = check_choice("dtype", f["dtype"], dtypes)
        ks = f["k"] if f["k"] is not None else k_grid(vocab, 12).tolist()
        sweep = cls(
            d=d,
            vocab=vocab,
            batch=check_int("batch", f["batch"], *limits.batch),
            dtype=dtype,
            k=int_list("k", ks, 1, vocab, limits.max_points),
            force=_bool("force", f["force"]),
            seed=check_int("seed", f["seed"], *limits.seed),
        )
        head_bytes(d, vocab, dtype, limits)
        sweep = sweep.in_blocks(limits)
        check_budget(sweep.nbytes(), "head sweep", limits)
        return sweep

    def in_blocks(self, limits: Limits, most: int = 64) -> HeadSweep:
        """This sweep in the fewest row blocks (at most ``most``) whose peak memory fits the
        budget of one request; itself if it fits whole (or if nothing does: the budget check
        then says so)."""
        for blocks in range(1, min(most, self.vocab) + 1):
            sweep = replace(self, blocks=blocks)
            if sweep.nbytes() <= limits.max_request_bytes:
                return sweep
        return self

    def nbytes(self) -> int:
        """Peak bytes measuring this sweep allocates (:func:`limits.head_sweep_bytes`, at one
        block's rows and the largest piece of K)."""
        k = max(-(-k // self.pieces(k)) for k in self.k)
        return head_sweep_bytes(self.d, self.rows, self.batch, self.dtype, k)


@dataclass(frozen=True)
class AmortizedSweep:
    """Full decode step vs amortized step (and rerank) of a small transformer over ``context``."""

    d: int
    layers: int
    vocab: int
    k: int = 64
    batch: int = 1
    dtype: str = "float32"
    context: tuple = (0, 64, 256, 1024)
    rerank_r: int = 8
    warmup_steps: int = 16
    force: bool = False
    seed: int = 0
    weights: str = "random"

    @classmethod
    def parse(cls, body, dtypes, limits: Limits | None = None) -> AmortizedSweep:
        """Validate ``{"d", "layers", "vocab", "k", "batch", "dtype", "context": [...]}``."""
        limits = limits or Limits()
        f = parse_fields(
            body,
            {"d": None, "layers": None, "vocab": None},
            {
                "k": 64,
                "batch": 1,
                "dtype": dtypes[0],
                "context": [0, 64, 256, 1024],
                "rerank_r": 8,
                "warmup_steps": 16,
                "force": False,
                "seed": 0,
                "weights": "random",
            },
        )
        d = check_int("d", f["d"], *limits.d)
        layers = check_int("layers", f["layers"], *limits.layers)
        weights = _check_weights(f["weights"], d, layers)
        vocab = check_int("vocab", f["vocab"], *limits.vocab)
        batch = check_int("batch", f["batch"], *limits.batch)
        dtype = check_choice("dtype", f["dtype"], dtypes)
        context = int_list("context", f["context"], *limits.context, limits.max_points)
        head_bytes(d, vocab, dtype, limits)
        model_bytes(d, layers, batch, context[-1], dtype, limits)
        sweep = cls(
            d=d,
            layers=layers,
            vocab=vocab,
            k=check_int("k", f["k"], 1, vocab),
            batch=batch,
            dtype=dtype,
            context=context,
            rerank_r=check_int("rerank_r", f["rerank_r"], *limits.rerank_r),
            warmup_steps=check_int("warmup_steps", f["warmup_steps"], *limits.warmup_steps),
            force=_bool("force", f["force"]),
            seed=check_int("seed", f["seed"], *limits.seed),
            weights=weights,
        )
        check_budget(sweep.nbytes(), "amortized sweep", limits)
        return sweep

    def nbytes(self) -> int:
        """Peak bytes measuring this sweep allocates (:func:`limits.amortized_sweep_bytes`)."""
        return amortized_sweep_bytes(
            self.d, self.layers, self.vocab, self.batch, self.dtype, self.k,
            max(self.context), self.rerank_r,
        )  # fmt: skip


def _check_weights(weights, d: int, layers: int) -> str:
    """``"random"`` (random weights at the Llama shape of ``(d, layers)``) or ``"model"`` (the
    served model's own, which must have that shape)."""
    weights = check_choice("weights", weights, ("random", "model"))
    if weights == "model":
        cfg, where = served_config()
        if cfg is None:
            raise ValueError(f"The 'weights' parameter 'model' needs the model file: {where}.")
        if (cfg.d, cfg.n_layers) != (d, layers):
            raise ValueError(
                f"The 'weights' parameter 'model' needs d={cfg.d} and layers={cfg.n_layers} "
                f"(the shape of {where}). Got d={d}, layers={layers}."
            )
    return weights


def _bool(name, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"The '{name}' parameter must be true or false. Got {value!r} instead.")
    return value


ProgressFn = Callable[[int, int, Point, bool], None]


class Runner:
    """Measures sweeps with one kernel backend into one store.

    ``on_point(done, total, point, reused)`` is called after each point of a sweep.
    """

    def __init__(self, kernels, store: ResultStore, timing: TimingConfig | None = None):
        self.kernels = kernels
        self.store = store
        self.timing = timing or default_timing(kernels.device)
        self.info = kernels.info()
        self.device_key = f"{kernels.device}:{kernels.device_name}"
        self.base_preset, _ = preset_for(kernels.device, kernels.device_name)
        self._clock = kernels.clock()
        self._flush = kernels.flusher(self.timing.flush_bytes)
        self._calibration: tuple | None = None  # (store.writes, Calibration or error text)

    # -- points ---------------------------------------------------------------------------
    def point(self, plan, version=None, **fields) -> Point:
        return Point(
            self.device_key, self.kernels.impl, version or self.kernels.version, plan,
            cache=self.timing.cache, **fields,
        )  # fmt: skip

    def version(self, sweep) -> str:
        """The kernel version, marked ``+blocks<n>`` for a head measured in row blocks (its
        times are sums, not one kernel's: calibration keeps to whole kernels)."""
        blocks = getattr(sweep, "blocks", 1)
        return self.kernels.version + (f"+blocks{blocks}" if blocks > 1 else "")

    def points(self, sweep) -> list[Point]:
        shape = dict(d=sweep.d, vocab=sweep.vocab, batch=sweep.batch, dtype=sweep.dtype)
        if isinstance(sweep, HeadSweep):
            v = self.version(sweep)
            return [self.point("dense_head", v, **shape)] + [
                self.point("sparse_head", v, k=k, **shape) for k in sweep.k
            ]
        body = dict(shape, k=sweep.k, layers=sweep.layers)
        out = [self.point("amortized_step", **body)]
        for c in sweep.context:
            out.append(self.point("full_step", context=c, **body))
            out.append(self.point("amortized_rerank", context=c, rerank_r=sweep.rerank_r, **body))
        return out

    def missing(self, sweep) -> list[Point]:
        """Points the sweep would measure now (all of them when forced)."""
        pts = self.points(sweep)
        return pts if sweep.force else [p for p in pts if not self.store.has(p)]

    # -- measuring ------------------------------------------------------------------------
    def run(self, sweep, on_point: ProgressFn | None = None) -> dict:
        """Measure the missing points of ``sweep``, then return :meth:`result`."""
        todo = {p.key for p in self.missing(sweep)}
        pts = self.points(sweep)
        done = 0

        def record(point, fn, check, times=1):
            nonlocal done
            if point.key in todo:
                timing = measure(fn, self._clock, self.timing, self._flush).scaled(times)
                env = {**self.info, "timing": self.timing.to_dict()}
                self.store.put(point, timing, env, check())
            done += 1
            if on_point is not None:
                on_point(done, len(pts), point, point.key not in todo)

        if todo:
            measure_fn = self._head if isinstance(sweep, HeadSweep) else self._body
            try:
                measure_fn(sweep, pts, todo, record)
            finally:  # work buffers sized for this sweep must not outlive it (memory budget)
                release = getattr(self.kernels, "release", None)
                if release is not None:
                    release()
        else:
            for p in pts:
                record(p, None, None)
        return self.result(sweep, measured=len(todo))

    def _head(self, sweep: HeadSweep, pts, todo, record):
        kn, s = self.kernels, sweep
        W = kn.random((s.rows, s.d), s.dtype, s.seed, scale=s.d**-0.5)  # one block (or all)
        h = kn.random((s.batch, s.d), s.dtype, s.seed + 1)
        for p in pts:
            if p.key not in todo:
                record(p, None, None)
                continue
            k = p.k or max(s.k)
            times = s.blocks if p.plan == "dense_head" else s.pieces(k)
            k = -(-k // s.pieces(k))  # the legal ids of one piece
            ids = kn.legal_ids(s.rows, s.batch, k, s.seed + 2 + k)
            blocked = kn.blocked(ids, s.rows)

            def dense(W=W, h=h, blocked=blocked):
                return kn.dense_head(W, h, blocked)

            def sparse(W=W, h=h, ids=ids):
                return kn.sparse_head(W, h, ids)

            def check(dense=dense, sparse=sparse):
                return bool((kn.to_numpy(dense()) == kn.to_numpy(sparse())).all())

            record(p, dense if p.plan == "dense_head" else sparse, check, times)

    def _body(self, sweep: AmortizedSweep, pts, todo, record):
        kn, s = self.kernels, sweep
        W = kn.random((s.vocab, s.d), s.dtype, s.seed, scale=s.d**-0.5)
        ids = kn.legal_ids(s.vocab, s.batch, s.k, s.seed + 2)
        blocked = kn.blocked(ids, s.vocab)
        bodies: dict = {}
        for p in pts:
            if p.key not in todo:
                record(p, None, None)
                continue
            if p.context not in bodies:
                bodies.clear()  # one KV cache at a time
                extra = {"weights": model_weights()} if s.weights == "model" else {}
                bodies[p.context] = kn.body(
                    s.d, s.layers, s.batch, s.dtype, p.context, s.seed + 3, **extra
                )
            body = bodies[p.context]
            fn, check = _body_plan(kn, p.plan, body, W, ids, blocked, s.rerank_r)
            record(p, fn, check)

    # -- answers --------------------------------------------------------------------------
    def calibration(self) -> Calibration | str:
        """Calibration on every stored point of this device, impl, kernel version and cache mode,
        or the reason it is not possible yet (cached until the store changes)."""
        if self._calibration is None or self._calibration[0] != self.store.writes:
            rows = self.store.query(
                device=self.device_key,
                impl=self.kernels.impl,
                version=self.kernels.version,
                cache=self.timing.cache,
            )
            try:
                value = calibrate(rows, self.base_preset, name=f"{self.device_key} (calibrated)")
            except ValueError as exc:
                value = str(exc)
            self._calibration = (self.store.writes, value)
        return self._calibration[1]

    def hardware(self):
        """``(hardware, source)``: the calibrated profile where possible, else the preset."""
        cal = self.calibration()
        if isinstance(cal, Calibration):
            return cal.hardware, "calibrated"
        return get_hardware(self.base_preset), "preset"

    def result(self, sweep, measured: int = 0) -> dict:
        """The sweep's answer, read from the store (every point must be there)."""
        pts = self.points(sweep)
        rows = [self.store.get(p) for p in pts]
        if any(r is None for r in rows):
            raise LookupError("Some points of this sweep are not measured yet.")
        hw, source = self.hardware()
        preset = get_hardware(self.base_preset)
        model, model_preset = model_seconds(rows, hw), model_seconds(rows, preset)
        cal = self.calibration()
        out = {
            "sweep": "head" if isinstance(sweep, HeadSweep) else "amortized",
            "params": asdict(sweep),
            "device": self.info,
            "cache": self.timing.cache,
            "hardware": {
                "source": source,
                "profile": hw.to_dict(),
                "preset": self.base_preset,
                "model_error": cal.errors if isinstance(cal, Calibration) else None,
            },
            "counts": {"points": len(pts), "measured": measured, "reused": len(pts) - measured},
        }
        columns = {p.key: (r, m, mp) for p, r, m, mp in zip(pts, rows, model, model_preset)}

        def entry(plan, **fields):
            return columns[self.point(plan, self.version(sweep), **fields).key]

        if isinstance(sweep, HeadSweep):
            out.update(head_answer(sweep, entry, hw, preset))
            if sweep.blocks > 1:
                out["measured_in"] = {
                    "blocks": sweep.blocks,
                    "rows": sweep.rows,
                    "note": f"the head is over one request's memory budget: measured in "
                    f"{sweep.blocks} row blocks of {sweep.rows} rows, times summed",
                }
        else:
            out.update(body_answer(sweep, entry))
        return out


def _sparse_on(state):
    """SparseHead on the state ``state(body)`` gives, checked against DenseHead on it."""

    def plan(kn, body, W, ids, blocked, r):
        def fn():
            return kn.sparse_head(W, state(body), ids)

        def check():
            h = state(body)
            return _same(kn, kn.sparse_head(W, h, ids), kn.dense_head(W, h, blocked))

        return fn, check

    return plan


def _amortized_rerank(kn, body, W, ids, blocked, r):
    def fn():
        h = body.amortized()
        top = kn.top_ids(kn.sparse_scores(W, h, ids), ids, r)
        return kn.sparse_head(W, body.last_layer(h), top)

    def check():
        h = body.amortized()
        top = kn.top_ids(kn.sparse_scores(W, h, ids), ids, r)
        exact = body.last_layer(h)
        ref = kn.dense_head(W, exact, kn.blocked(top, W.shape[0]))
        return _same(kn, kn.sparse_head(W, exact, top), ref)

    return fn, check


#: The amortized sweep's kernels, keyed by the stored names (:func:`modelled.stored_name`) of
#: the registry plans they run, so each is priced by that plan's recipe.
BODY_PLANS = {
    stored_name("SparseHead"): _sparse_on(lambda body: body.decode()),
    stored_name("AmortizedHead"): _sparse_on(lambda body: body.amortized()),
    stored_name("AmortizedRerank"): _amortized_rerank,
}


def _body_plan(kn, plan, body, W, ids, blocked, r):
    """Zero-argument callable of one amortized-sweep plan, and its dense-reference check."""
    return BODY_PLANS[plan](kn, body, W, ids, blocked, r)


def _same(kn, a, b) -> bool:
    return bool((kn.to_numpy(a) == kn.to_numpy(b)).all())
