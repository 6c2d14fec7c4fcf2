"""The article page (static/paper.html): pre-rendered, live, autoplaying router, phone width."""

from __future__ import annotations


def test_article_is_live_and_its_router_plays_in_view(open_page, static_url):
    app = open_page(static_url + "paper.html")
    app.page.wait_for_function("window.llmqp && llmqp.timings.prerendered != null")
    assert app.page.evaluate("Bokeh.documents[0].get_model_by_name('crossover_dense') != null")
    app.wait_static_ready()
    assert app.page.evaluate("llmqp.hydrated") is True  # one document, kept from the pre-render
    assert app.page.get_by_text("Sparse scoring wins while K").count() == 1  # pierces shadow DOM

    # Figure 3 shows the finished run; it starts playing by itself once scrolled into view.
    horizon = app.data("regret_linucb")["step"][-1]
    assert app.prop("play_button", "active") is False
    app.js("() => Bokeh.index.find_one(window.__find('regret_figure')).el.scrollIntoView()")
    app.page.wait_for_function(
        f"(() => {{ const s = window.__data('regret_linucb').step;"
        f" return s[s.length - 1] < {horizon} && s.length > 3; }})()",
        timeout=30_000,
    )
    assert app.prop("play_button", "active") is True
    app.click("play_button")  # the reader can pause it
    app.page.wait_for_function("window.__find('play_button').active === false")

    # A slider of the first section redraws Figure 1.
    dense = app.data("crossover_dense")
    app.set_value("k_input", 3000)
    app.wait_change("window.__data('crossover_dense')", dense)


def test_article_fits_a_phone_width_screen(open_page, static_url):
    app = open_page(static_url + "paper.html")
    app.page.set_viewport_size({"width": 390, "height": 844})
    app.wait_static_ready()
    app.page.wait_for_timeout(500)
    overflow = app.page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 392, f"the page is {overflow} px wide at 390 px"
