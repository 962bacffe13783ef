// aftercare pages: small progressive enhancements, no inline script (CSP).
"use strict";

// Fetch a server-rendered fragment and hand it to `show`; when the session has ended, reload
// to show the sign-in page; offline for a moment, try again at the next tick.
function poll(url, show) {
  fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
    .then(function (r) {
      if (r.redirected || r.status === 401 || r.status === 403) {
        window.location.reload();
        return null;
      }
      return r.ok ? r.text() : null;
    })
    .then(function (html) {
      if (html !== null && html !== undefined) { show(html); }
    })
    .catch(function () { /* try again next time */ });
}

(function () {
  // The queue refreshes itself so a new critical escalation shows up without a reload.
  var table = document.querySelector("table[data-refresh]");
  if (table) {
    var body = document.getElementById("queue-rows");
    var url = table.getAttribute("data-refresh") + window.location.search;
    var refresh = function () {
      poll(url, function (html) {
        body.innerHTML = html;  // server-rendered and autoescaped
      });
    };
    window.setInterval(refresh, 15000);
  }

  // Confirm buttons that change a patient's status.
  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target instanceof HTMLElement && target.hasAttribute("data-confirm")) {
      if (!window.confirm(target.getAttribute("data-confirm"))) {
        event.preventDefault();
      }
    }
  });

  // Line numbers for the flow editor's plain textarea.
  var editor = document.querySelector("textarea[data-lines]");
  if (editor) {
    var gutter = document.getElementById(editor.getAttribute("data-lines"));
    var draw = function () {
      var n = editor.value.split("\n").length;
      var out = [];
      for (var i = 1; i <= n; i++) { out.push(i); }
      gutter.textContent = out.join("\n");
      gutter.scrollTop = editor.scrollTop;
    };
    editor.addEventListener("input", draw);
    editor.addEventListener("scroll", function () { gutter.scrollTop = editor.scrollTop; });
    draw();
    // Clicking a problem moves the cursor to its line.
    document.querySelectorAll("[data-goto-line]").forEach(function (el) {
      el.addEventListener("click", function (ev) {
        ev.preventDefault();
        var line = parseInt(el.getAttribute("data-goto-line"), 10);
        var lines = editor.value.split("\n");
        var pos = 0;
        for (var i = 0; i < line - 1 && i < lines.length; i++) { pos += lines[i].length + 1; }
        editor.focus();
        editor.setSelectionRange(pos, pos + (lines[line - 1] || "").length);
        editor.scrollTop = Math.max(0, (line - 5) * 18);
        draw();
      });
    });
  }
})();

// The demo phone: the conversation refreshes every 2 s (replies go out asynchronously) and
// stays scrolled to the newest text; choosing a patient opens their phone at once.
(function () {
  var list = document.querySelector("#phone-messages[data-refresh]");
  var bottom = function () { if (list) { list.scrollTop = list.scrollHeight; } };
  if (list) {
    var url = list.getAttribute("data-refresh");
    var last = list.innerHTML;
    bottom();
    var refresh = function () {
      poll(url, function (html) {
        if (html !== last) {
          last = html;
          list.innerHTML = html;  // server-rendered and autoescaped
          bottom();
        }
      });
    };
    window.setInterval(refresh, 2000);
  }
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () {
      if (select.value && select.form) {
        var typed = select.form.querySelector("input[name=number]");
        if (typed) { typed.value = ""; }
        select.form.submit();
      }
    });
  });
})();
