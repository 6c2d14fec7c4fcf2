// The article's router section plays by itself once it scrolls into view (paper.html only):
// when the live page is ready and Figure 3 is at least 40% on screen, press its play button
// once. The reader pauses or replays it with the buttons; nothing here runs again.
"use strict";
(function () {
  const find = (name) => {
    const docs = window.Bokeh ? Bokeh.documents : [];
    for (let i = docs.length - 1; i >= 0; i--) {
      const model = docs[i].get_model_by_name(name);
      if (model != null) return model;
    }
    return null;
  };
  const watch = () => {
    const state = document.documentElement.dataset.llmqp;
    if (state === "static" || state === "error") return; // no Python: nothing to play
    const play = find("play_button");
    const figure = find("regret_figure");
    const view = figure != null ? Bokeh.index.find_one(figure) : null;
    if (state !== "ready" || play == null || view == null) {
      setTimeout(watch, 250);
      return;
    }
    const observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((e) => e.isIntersecting)) {
          observer.disconnect();
          if (!play.active) play.active = true; // goes to Python like a click
        }
      },
      {threshold: 0.4}
    );
    observer.observe(view.el);
  };
  watch();
})();
