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

// Each cell gets its column's heading as data-label, so on a phone, where a list's rows are
// stacked as cards (app.css), every value says what it is, whatever the columns are.
function labelCells(table) {
  var names = [];
  table.querySelectorAll("thead th").forEach(function (th) {
    for (var k = 0; k < (th.colSpan || 1); k++) { names.push(th.textContent.trim()); }
  });
  table.querySelectorAll("tbody tr").forEach(function (tr) {
    var i = 0;
    Array.prototype.forEach.call(tr.cells, function (td) {
      if (td.colSpan === 1 && i < names.length) { td.setAttribute("data-label", names[i]); }
      i += td.colSpan || 1;
    });
  });
}

(function () {
  document.querySelectorAll("table").forEach(labelCells);
  // The queue refreshes itself so a new critical escalation shows up without a reload.
  var table = document.querySelector("table[data-refresh]");
  if (table) {
    var body = document.getElementById("queue-rows");
    var url = table.getAttribute("data-refresh") + window.location.search;
    var title = document.title;
    var criticals = function () {
      var ids = {};
      body.querySelectorAll("tr[data-severity=critical]").forEach(function (tr) {
        ids[tr.getAttribute("data-id")] = true;
      });
      return ids;
    };
    var seen = criticals();
    var sound = document.getElementById("queue-sound");
    if (sound) {
      sound.checked = window.localStorage.getItem("aftercare.queueSound") === "on";
      sound.addEventListener("change", function () {
        window.localStorage.setItem("aftercare.queueSound", sound.checked ? "on" : "off");
      });
    }
    var beep = function () {
      // a short tone made here: no audio file, nothing fetched
      var Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) { return; }
      var ctx = new Ctx();
      var osc = ctx.createOscillator();
      osc.frequency.value = 880;
      osc.connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.4);
    };
    // A new critical alert changes the tab's title (seen from another tab) until the page
    // is looked at again; the sound is the user's choice.
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) { document.title = title; }
    });
    var refresh = function () {
      poll(url, function (html) {
        body.innerHTML = html;  // server-rendered and autoescaped
        labelCells(table);
        var now = criticals();
        var fresh = Object.keys(now).filter(function (id) { return !seen[id]; });
        seen = now;
        if (fresh.length) {
          document.title = "(" + fresh.length + ") New critical alert · " + title;
          document.body.setAttribute("data-new-critical", fresh.join(","));
          if (sound && sound.checked) { beep(); }
        }
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

// Error pages: "Go back" needs script (CSP allows no javascript: links), so it shows only
// when there is somewhere to go back to.
(function () {
  document.querySelectorAll("[data-history-back]").forEach(function (button) {
    if (window.history.length > 1) {
      button.hidden = false;
      button.addEventListener("click", function () { window.history.back(); });
    }
  });
})();

// Station screens: the server ends a session after IDLE_TIMEOUT without a page request
// (the queue's own refresh does not count). <body> carries the numbers; every page load is
// activity, so the clock starts when the page loads. Some minutes before the end a warning
// offers "Stay signed in" (a keepalive request, which is activity); at the end the page
// goes to the sign-in page, which comes back here afterwards.
(function () {
  var body = document.body;
  var idle = parseInt(body.getAttribute("data-idle-seconds") || "", 10);
  var keepalive = body.getAttribute("data-keepalive");
  if (!(idle > 0) || !keepalive) { return; }
  // the server extends the session at most every `slack` seconds, so the session may end
  // that much before load + idle: count down to the earlier time, leave after the later one
  var slack = parseInt(body.getAttribute("data-idle-slack-seconds") || "0", 10) || 0;
  var lead = parseInt(body.getAttribute("data-idle-warn-seconds") || "120", 10) || 120;
  var endsAt = 0;  // when the session surely still lives until (ms, Date.now())
  var leaveAt = 0;  // when it has surely ended
  var timer = null;
  var shownText = "";
  var problem = "";

  var box = document.createElement("div");
  box.className = "idle-warning";
  box.id = "idle-warning";
  box.setAttribute("role", "alert");
  box.hidden = true;
  var message = document.createElement("p");
  var stay = document.createElement("button");
  stay.type = "button";
  stay.textContent = "Stay signed in";
  box.appendChild(message);
  box.appendChild(stay);
  body.appendChild(box);

  function say(text) {
    text = problem ? text + " " + problem : text;
    if (text !== shownText) { shownText = text; message.textContent = text; }
  }

  function left(ms) {
    var minutes = Math.ceil(ms / 60000);
    if (ms <= 0) { return ""; }
    if (minutes <= 1) { return ms < 60000 ? "less than a minute" : "1 minute"; }
    return minutes + " minutes";
  }

  function signIn() {
    var here = window.location.pathname + window.location.search;
    window.location.assign("/login?next=" + encodeURIComponent(here));
  }

  function tick() {
    var now = Date.now();
    if (now >= leaveAt) { signIn(); return; }
    if (now >= endsAt - lead * 1000) {
      var rest = left(endsAt - now);
      say(rest ? "You will be signed out in " + rest + " for inactivity."
               : "You are being signed out for inactivity.");
      box.hidden = false;
    } else {
      box.hidden = true;
    }
    timer = window.setTimeout(tick, 1000);
  }

  function start() {
    var now = Date.now();
    endsAt = now + Math.max(idle - slack, 0) * 1000;
    leaveAt = now + (idle + 2) * 1000;
    window.clearTimeout(timer);
    shownText = "";
    tick();
  }

  stay.addEventListener("click", function () {
    var token = document.querySelector("form.logout input[name=csrf_token]");
    var form = new URLSearchParams();
    form.set("csrf_token", token ? token.value : "");
    stay.disabled = true;
    fetch(keepalive, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Accept": "application/json" },
      body: form
    }).then(function (r) {
      if (r.redirected || r.status === 401) { signIn(); return; }  // the session had ended
      if (r.status === 403) { window.location.reload(); return; }  // a newer sign-in's token
      if (!r.ok) { throw new Error("keepalive " + r.status); }
      return r.json().then(function (answer) {
        if (answer && answer.idle_seconds > 0) { idle = answer.idle_seconds; }
        problem = "";
        box.hidden = true;
        start();
      });
    }).catch(function () {
      problem = "The server did not answer; check the connection and try again.";
      window.clearTimeout(timer);
      tick();
    }).then(function () { stay.disabled = false; });
  });

  start();
})();
