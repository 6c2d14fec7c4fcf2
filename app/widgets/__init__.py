"""The interactive app: a ``param`` state, pure-Bokeh figures, and a thin Panel shell.

Module map (nothing is imported here, so ``app.widgets.state`` loads without Panel):

* :mod:`.state`        ``ScenarioState`` — every input, bounded, no Panel import
* :mod:`.plotting`     shared Bokeh tools and the SVG switch
* :mod:`.crossover`    Figure 1, dense vs sparse head time over K
* :mod:`.amortization` Figure 2, the τ curve and the decode-length crossover N*
* :mod:`.router`       Figure 3, live regret against the oracle
* :mod:`.explain`      the EXPLAIN plan table
* :mod:`.controls`     Panel widgets bound to the state (log sliders, test hooks)
* :mod:`.measured`     server mode only: the measurement backend panel
* :mod:`.app`          the layout and the wiring
* :mod:`.export`       standalone HTML and Bokeh JSON items of each figure
"""
