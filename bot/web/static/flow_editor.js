// The flow editor, enhanced: validate, diff and simulate without leaving the page, and
// problems that jump to their line. Without this script the same form posts and the
// server renders the same panels (CSP: no inline script, so everything lives here).
"use strict";

(function () {
  var form = document.getElementById("editor-form");
  var editor = document.getElementById("source");
  if (!form || !editor) { return; }

  var LIVE = { validate: true, diff: true, simulate: true, restart: true };
  var url = form.getAttribute("action").split("#")[0];
  var native = false;  // set while falling back to an ordinary post
  var pending = false;

  // -- small DOM helpers (text only: nothing from the server becomes markup) ----------------

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (attrs[name] !== null && attrs[name] !== undefined) { node.setAttribute(name, attrs[name]); }
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) { return; }
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function clear(node) {
    while (node.firstChild) { node.removeChild(node.firstChild); }
  }

  function showText(node, text) {
    if (!node) { return; }
    node.textContent = text || "";
    node.hidden = !text;
  }

  // -- jump to a line ----------------------------------------------------------------------

  // Put the caret at the start of `line` (1-based), select the line, and scroll both the
  // textarea (to the line) and the page (to the textarea) so it is in view.
  function gotoLine(line) {
    var lines = editor.value.split("\n");
    var n = Math.max(1, Math.min(line || 1, lines.length));
    var start = 0;
    for (var i = 0; i < n - 1; i++) { start += lines[i].length + 1; }
    var end = start + lines[n - 1].length;
    editor.focus({ preventScroll: true });
    editor.setSelectionRange(start, end, "backward");
    var style = window.getComputedStyle(editor);
    var height = parseFloat(style.lineHeight) || 18;
    var top = (n - 1) * height + (parseFloat(style.paddingTop) || 0);
    if (top < editor.scrollTop || top + height > editor.scrollTop + editor.clientHeight) {
      editor.scrollTop = Math.max(0, top - editor.clientHeight / 3);
    }
    editor.scrollLeft = 0;
    editor.dispatchEvent(new Event("scroll"));  // the line-number gutter follows
    var box = editor.getBoundingClientRect();
    if (box.top < 0 || box.bottom > window.innerHeight) {
      editor.scrollIntoView({ block: "nearest" });
    }
  }

  document.addEventListener("click", function (event) {
    var link = event.target instanceof Element ? event.target.closest("[data-goto-line]") : null;
    if (!link) { return; }
    event.preventDefault();
    gotoLine(parseInt(link.getAttribute("data-goto-line"), 10));
  });

  // -- panels --------------------------------------------------------------------------------

  function gotoLink(line, column, label) {
    return el("a", { href: "#source", "data-goto-line": line, "data-goto-column": column }, [label]);
  }

  function renderProblems(data) {
    var box = document.getElementById("problems");
    if (!box || !data.checked) { return; }
    clear(box);
    var problems = data.problems || [];
    if (!problems.length) {
      box.appendChild(el("h2", { id: "problems-summary" }, ["Problems"]));
      box.appendChild(el("p", { "class": "notice" }, ["No problems found."]));
      return;
    }
    var n = problems.length;
    box.appendChild(el("h2", { id: "problems-summary" }, [n + " problem" + (n === 1 ? "" : "s")]));
    var list = el("ul");
    problems.forEach(function (p) {
      list.appendChild(el("li", { "class": p.severity + "-item" }, [
        gotoLink(p.line, p.column, "line " + p.line + ", column " + p.column),
        ": " + (p.severity === "warning" ? "warning: " : "") + p.message
      ]));
    });
    box.appendChild(list);
  }

  function renderWarnings(warnings) {
    var box = document.getElementById("editor-warnings");
    if (!box || !warnings) { return; }
    clear(box);
    box.hidden = !warnings.length;
    if (!warnings.length) { return; }
    box.appendChild(el("h2", {}, ["Warnings"]));
    var list = el("ul");
    warnings.forEach(function (w) {
      var item = el("li", {}, [w.message]);
      (w.nodes || []).forEach(function (node, i) {
        item.appendChild(document.createTextNode(i === 0 ? ": " : ", "));
        item.appendChild(el("a", { href: "#source", "data-goto-line": node.line }, [node.id]));
      });
      list.appendChild(item);
    });
    box.appendChild(list);
  }

  function renderDiff(diff) {
    var box = document.getElementById("diff");
    var body = document.getElementById("diff-body");
    if (!box || !body || diff === null || diff === undefined) { return; }
    clear(body);
    box.hidden = false;
    if (!diff) {
      body.appendChild(el("p", {}, ["No changes."]));
    } else {
      var pre = el("pre", { "class": "diff" });
      diff.replace(/\n$/, "").split("\n").forEach(function (line) {
        var cls = line.charAt(0) === "+" ? "add" : (line.charAt(0) === "-" ? "del" : "");
        pre.appendChild(el("span", { "class": cls }, [line]));
        pre.appendChild(document.createTextNode("\n"));
      });
      body.appendChild(pre);
    }
    box.scrollIntoView({ block: "nearest" });
  }

  function shown(value) {
    if (value === null || value === undefined) { return "unanswered"; }
    if (value === true) { return "yes"; }
    if (value === false) { return "no"; }
    return String(value);
  }

  function column(title, items, empty, cls) {
    var list = el("ul", cls ? { "class": cls } : {});
    if (!items.length) { list.appendChild(el("li", { "class": "empty" }, [empty])); }
    items.forEach(function (item) { list.appendChild(item); });
    return el("div", {}, [el("h3", {}, [title]), list]);
  }

  function renderSimulation(data) {
    var box = document.getElementById("sim-result");
    if (!box) { return; }
    var replies = form.querySelector("input[name=replies]");
    if (replies) { replies.value = (data.replies || []).join("\n"); }
    showText(document.getElementById("sim-error"), data.sim_error || data.error);
    var sim = data.sim;
    var send = form.querySelector("button[name=action][value=simulate]");
    if (!sim) {
      if (data.action === "restart") { clear(box); }
      return;
    }
    var reply = form.querySelector("input[name=reply]");
    if (reply) { reply.value = ""; }
    if (send) { send.textContent = send.getAttribute("data-send") || "Send"; }
    clear(box);
    var chat = el("ol", { "class": "transcript chat" });
    sim.transcript.forEach(function (line) {
      chat.appendChild(el("li", { "class": line.who === "patient" ? "msg-in" : "msg-out" }, [
        el("span", { "class": "body" }, [line.text])
      ]));
    });
    box.appendChild(chat);
    box.appendChild(el("div", { "class": "grid" }, [
      column("Answers", sim.answers.map(function (a) {
        return el("li", {}, [a.flow + "." + a.key + " = " + shown(a.value)]);
      }), "none yet"),
      column("Scores", sim.scores.map(function (s) {
        return el("li", {}, [s.name + ": " + s.total + (s.band ? " (" + s.band + ")" : "")]);
      }), "none yet"),
      column("Escalations", sim.escalations.map(function (e) {
        return el("li", { "class": "sev-" + e.severity }, [
          el("span", { "class": "badge sev-" + e.severity }, [e.severity]),
          " " + e.reason + ": " + e.summary
        ]);
      }), "none", "escalations")
    ]));
    if (sim.outcome) {
      box.appendChild(el("p", { "class": "hint" }, ["Conversation ended: " + sim.outcome + "."]));
    }
    chat.scrollTop = chat.scrollHeight;
  }

  function show(data) {
    renderProblems(data);
    renderWarnings(data.warnings);
    if (data.action === "simulate" || data.action === "restart") {
      renderSimulation(data);
      showText(document.getElementById("editor-error"), "");
    } else {
      showText(document.getElementById("editor-error"), data.error);
      if (data.action === "diff") { renderDiff(data.diff); }
    }
  }

  // -- posting -------------------------------------------------------------------------------

  function busy(on) {
    pending = on;
    form.setAttribute("aria-busy", on ? "true" : "false");
  }

  // The server did not answer JSON (signed out, form expired, ...): post the form as if
  // there were no script, so the admin sees the same page they would have.
  function fallback(button) {
    native = true;
    if (form.requestSubmit) { form.requestSubmit(button); } else { button.click(); }
  }

  function send(action, button) {
    if (pending) { return; }
    var body = new URLSearchParams(new FormData(form));
    body.set("action", action);
    busy(true);
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Accept": "application/json" },
      body: body
    })
      .then(function (r) {
        var type = r.headers.get("Content-Type") || "";
        if (r.redirected || type.indexOf("application/json") !== 0) { return null; }
        return r.json();
      })
      .then(function (data) {
        busy(false);
        if (data === null) { fallback(button); } else { show(data); }
      })
      .catch(function () {
        busy(false);
        var where = action === "simulate" || action === "restart" ? "sim-error" : "editor-error";
        showText(document.getElementById(where), "The server could not be reached; try again.");
      });
  }

  form.addEventListener("submit", function (event) {
    var button = event.submitter;
    var action = button && button.name === "action" ? button.value : "";
    if (native || !LIVE[action]) { return; }
    event.preventDefault();
    send(action, button);
  });

  // Enter in the reply box sends the reply (the form's first button would validate).
  var reply = form.querySelector("input[name=reply]");
  if (reply) {
    reply.addEventListener("keydown", function (event) {
      if (event.key === "Enter") {
        event.preventDefault();
        var button = form.querySelector("button[name=action][value=simulate]");
        if (button) { button.click(); }
      }
    });
  }

  // Publishing needs a change note: ask for it before the confirmation, not after.
  var note = document.getElementById("note");
  if (note) {
    note.addEventListener("input", function () { note.setCustomValidity(""); });
    note.addEventListener("keydown", function (event) {
      if (event.key === "Enter") {
        event.preventDefault();
        var button = form.querySelector("button[name=action][value=publish]");
        if (button) { button.click(); }
      }
    });
    document.addEventListener("click", function (event) {
      var target = event.target instanceof Element ? event.target.closest("button") : null;
      if (!target || target.name !== "action" || target.value !== "publish") { return; }
      if (!note.value.trim()) {
        event.preventDefault();
        event.stopPropagation();  // no "Publish?" confirmation for a publish that cannot go
        note.setCustomValidity("Write a short change note: what changed and why.");
        note.reportValidity();
      }
    }, true);
  }
})();
