// MathJax 3 configuration for pymdownx.arithmatex (generic mode): typeset
// only the `arithmatex` spans and blocks the Markdown produced. MathJax
// itself (javascripts/mathjax/tex-chtml.js) is served by the site; see
// docs/_hooks.py.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
  // Everything MathJax needs is in tex-chtml.js: never load a component
  // from elsewhere.
  loader: { load: [] },
};

// Material's instant navigation swaps pages without reloading: typeset
// each new page.
if (typeof document$ !== "undefined") {
  document$.subscribe(function () {
    if (window.MathJax && MathJax.typesetPromise) {
      MathJax.typesetClear && MathJax.typesetClear();
      MathJax.typesetPromise();
    }
  });
}
