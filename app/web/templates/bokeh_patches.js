// BokehJS rewrites every renderer's <style> element (its box) each time it paints a plot, and
// the browser parses and restyles a sheet whose text is set, changed or not: ~100 sheets per K
// move here, half the style work of the move. An unchanged sheet is left alone, so what is on
// screen stays the same. Inlined into the page's handler and embed.js (page.py).
function quietBokehStyleSheets() {
  try {
    const proto = Bokeh.require("core/dom").InlineStyleSheet.prototype;
    proto._update = function (css) {
      if (this.el.textContent !== css) this.el.textContent = css;
    };
  } catch (e) {
    console.warn("llmqp: BokehJS style sheets left as they are (" + e + ")");
  }
}
