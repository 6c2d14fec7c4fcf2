"""The article's text (``static/paper.html``): one section per result, HTML, no Panel import.

Each section says the formula in words and what to look for in its figure; the numbers in the
figure are recomputed live from ``app.model`` / ``app.router`` as the reader moves a slider.
"""

from __future__ import annotations

__all__ = ["TITLE", "INTRO", "SECTIONS", "CLOSING"]

TITLE = "Query planning for constrained decoding"

INTRO = """
<p class="llmqp-lede">Constrained decoding (JSON, grammars, choice lists) masks the language
model's output to the tokens the constraint allows. Treat each decode step as a database query
and it has several equivalent physical plans: score the whole vocabulary and mask, score only the
legal tokens, or reuse a stable decoder state and refine only when unsure. This page works
through the three results of the paper. Every figure is recomputed in your browser as you drag
its sliders; nothing is sent anywhere.</p>
"""

SECTIONS = {
    "crossover": {
        "title": "1 · Sparse scoring wins while K < |V|",
        "before": """
<p>The dense head multiplies the decoder state by the whole output matrix, <i>d</i> × |V|
weights, and then masks the illegal tokens: about 2·<i>d</i>·|V| floating-point operations and
one read of every weight per step. The sparse head gathers only the <i>K</i> legal rows and
scores those: 2·<i>d</i>·<i>K</i> operations. Counting operations alone, sparse scoring wins
exactly while <i>K</i> &lt; |V| (the black dashed line).</p>
<p>Real hardware charges for bytes and kernel launches too. Gathered rows stream slower than a
contiguous read, the legal indices have to be read, and each kernel pays a fixed launch cost. The
roofline model prices all three; the blue dash-dot line marks <b>K*</b>, the largest <i>K</i>
at which the sparse head is still no slower.</p>
""",
        "after": """
<p><b>What to look for.</b> K* sits below |V|, often far below: the sparse head's gathers
make it memory-bound before the operation count catches up. Shrink the vocabulary or the width
and both heads become launch-bound, the curves flatten and K* can vanish. On a CPU profile the
gap between the two views is widest.</p>
""",
        "controls": ("d", "vocab", "k", "hardware"),
    },
    "amortization": {
        "title": "2 · Amortize when the model is confident",
        "before": """
<p>Most decode steps are easy: the best token leads the runner-up by a wide margin. An
amortized head reuses a stable decoder state plus a cheap update, whose logits are within
<i>ε</i> of the exact ones, and runs a full exact step only when the normalised margin falls
below a threshold <i>τ</i>. A step then costs the amortized update plus <i>p</i>(<i>τ</i>) times
an exact step, where <i>p</i>(<i>τ</i>) is the share of margins below <i>τ</i>.</p>
<p>An error of at most <i>ε</i> in every logit can flip the top two tokens only when their
margin is below 2<i>ε</i>. That is the certificate: with <b>τ ≥ 2ε</b> the amortized plan makes
exactly the decisions exact decoding makes (the marked safe τ).</p>
""",
        "after": """
<p><b>What to look for.</b> Left: the expected cost per step grows with τ toward an exact step
every time, while the decision error (right axis) falls to zero at τ = 2ε. Right: amortizing
pays a few exact warm-up steps to fit its stable state, so it wins only for decodes longer than
<b>N*</b>; raise ε and the safe τ, and N*, move up.</p>
""",
        "controls": ("tau", "eps", "decode_length"),
    },
    "router": {
        "title": "3 · The router learns to route",
        "before": """
<p>Which plan is cheapest changes from step to step: with the legal-set size, the margin, the
position in the decode and the state of the cache. A contextual bandit sees those features,
picks a plan, observes its loss <i>ℓ</i> = <i>λ</i>·latency/reference + (1 − <i>λ</i>)·wrong-token
probability, and updates. Its regret is the extra loss over the per-step oracle that always
knew the best plan (the zero line).</p>
""",
        "after": """
<p><b>What to look for.</b> The regret curve rises quickly while the router explores, then
bends: a learning router's regret grows sublinearly, while a fixed plan's (dashed) grows in a
straight line. The bars show which plans it ends up choosing. Lower λ makes quality matter more
and the exact plans win more steps. The run starts by itself when this section scrolls into
view; pause or replay it with the buttons.</p>
<p><b>On a real model.</b> Switch the workload to <i>real trace</i> and the router replays what
the engine measured: SmolLM2-135M decoding JSON and grammar requests on a CPU, every plan timed
at every step, the loss the measured seconds. Figure 1 then shows that trace's legal-set sizes
(grey bars: a third of its steps are forced, another third allow most of the vocabulary) and
Figure 2 its amortizer's measured decision error beside the model's curve, with the margin law
fitted to the trace's margins. λ and α do not apply there: time is the only loss.</p>
""",
        "controls": ("workload", "router", "lam", "seed"),
    },
}

CLOSING = """
<p class="llmqp-small">Same seed, same curve: every run draws its stream from one seeded
generator. The full dashboard, with every input and the plan table, is on the
<a href="index.html">app page</a>.</p>
"""
