/* ipywidgets 8 typesets widget labels with MathJax 2's API, MathJax.Hub.Queue(["Typeset", Hub, el]),
 * whenever window.MathJax exists. This book loads MathJax 3, which has no Hub: without this shim
 * every slider of the embedded widgets throws "Cannot read properties of undefined (reading
 * 'Queue')". Loaded by _config.yml (nb_ipywidgets_js) before the widget manager, on pages with
 * widgets only; MathJax 3 is loaded (deferred) before DOMContentLoaded, the widgets render at
 * window load. */
document.addEventListener("DOMContentLoaded", function () {
  var mj = window.MathJax;
  if (!mj || mj.Hub || !mj.startup || !mj.startup.promise) return;
  mj.Hub = {
    Queue: function (command) {
      var element = Array.isArray(command) ? command[2] : null;
      if (!element) return;
      mj.startup.promise = mj.startup.promise
        .then(function () { return mj.typesetPromise([element]); })
        .catch(function (err) { console.warn("MathJax could not typeset a widget label:", err); });
    },
  };
});
