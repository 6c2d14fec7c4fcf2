// What a K move costs the page, cut without changing what it shows. Inlined into the page's
// handler and embed.js (page.py); each patch is applied once Bokeh (and Panel) are loaded.
function patchBokehJS() {
  const patch = (what, apply) => {
    try {
      apply();
    } catch (e) {
      console.warn("llmqp: " + what + " left as it is (" + e + ")");
    }
  };
  // BokehJS rewrites every renderer's <style> element (its box) each time it paints a plot,
  // and the browser parses and restyles a sheet whose text is set, changed or not: ~100
  // sheets per K move here, half the style work of the move. An unchanged sheet is left alone.
  patch("BokehJS style sheets", () => {
    const proto = Bokeh.require("core/dom").InlineStyleSheet.prototype;
    proto._update = function (css) {
      if (this.el.textContent !== css) this.el.textContent = css;
    };
  });
  // Each visual property a paint reads (a line's colour, a label's font...) first asks the
  // element's computed style for a `--bk-*` variable, and that read forces the browser to
  // restyle the page whenever the paint has just touched the DOM: ~13 ms of a K move. These
  // figures take every visual from Python and no stylesheet of the site sets `--bk-*`
  // variables, so the answer is always "none": say so without asking.
  patch("BokehJS CSS visuals", () => {
    Bokeh.require("core/visuals/visual").VisualProperties.prototype._get_css_value = () => "";
  });
  // Every axis label a paint lays out asks the plot for its element's computed font size (for
  // `em` sizes): ~90 reads a K move here, each forcing a restyle when the paint has just
  // touched the DOM. The answer is kept for the rest of the frame (document.timeline's time
  // stays the same until the next one).
  patch("BokehJS font size", () => {
    const proto = Bokeh.require("models/plots/plot").PlotView.prototype;
    const read = Object.getOwnPropertyDescriptor(proto, "base_font_size").get;
    Object.defineProperty(proto, "base_font_size", {
      configurable: true,
      get() {
        const frame = document.timeline.currentTime;
        if (frame == null || this._llmqp_font_frame !== frame) {
          this._llmqp_font_size = read.call(this);
          this._llmqp_font_frame = frame;
        }
        return this._llmqp_font_size;
      },
    });
  });
  // A legend rebuilds its items' DOM (a canvas each) whenever anything its items reach changes,
  // their renderers' data included, i.e. on every K move (~9 rebuilds and a forced layout per
  // move here). Only the items themselves (labels, renderers, visibility) change what it
  // shows: a paint redraws the item glyphs from the renderers anyway. Legends labelled by a
  // data column keep listening to the data.
  patch("BokehJS legends", () => {
    const proto = Bokeh.require("models/annotations/legend").LegendView.prototype;
    const on = proto.on_transitive_change;
    proto.on_transitive_change = function (property, fn, options) {
      const byField = this.model.items.some(
        (item) => item.label != null && typeof item.label === "object" && "field" in item.label
      );
      return on.call(this, property, fn, byField ? options : {...options, recursive: false});
    };
  });
  // Panel's Location pushes a browser history entry for every change of the query string,
  // i.e. one per slider move (Back then steps through them), and echoes the new href back to
  // Python (another patch round trip). The address is replaced instead, once the moves pause.
  patch("Panel's Location", () => {
    const pauseMs = 250;
    const Location = Bokeh.require("base").default_resolver.get("panel.models.location.Location");
    const proto = Location.prototype.default_view.prototype;
    proto._set_url_gated = function (url) {
      clearTimeout(this._llmqp_url_timer);
      this._llmqp_url_timer = setTimeout(() => {
        window.history.replaceState(window.history.state, "", url);
        this.model.href = window.location.href;
      }, pauseMs);
    };
  });
}
