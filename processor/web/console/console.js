// The evaluation console: a user's status, enrollment and learning
// progress, recent decisions with their signals, usage per day, and a
// microphone "try it" panel that runs the SDK with client tokens minted by
// the signed-in key. Every value from the server goes in as text, never as
// markup.
(function () {
  "use strict";

  const STORAGE = "timbre.console.key";
  const $ = (id) => document.getElementById(id);
  let key = sessionStorage.getItem(STORAGE);

  async function api(method, path, body) {
    const init = { method, headers: { "x-api-key": key } };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      const error = new Error((data && data.message) || response.statusText);
      error.code = (data && data.error) || "http_" + response.status;
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function element(tag, text, className) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (className) e.className = className;
    return e;
  }

  function percent(x) {
    return typeof x === "number" ? Math.round(x * 100) + "%" : "–";
  }

  async function signIn(candidate) {
    key = candidate;
    const usage = await api("GET", "/v1/usage");
    sessionStorage.setItem(STORAGE, key);
    $("who").textContent = "tenant " + usage.tenant + " · key " + usage.key_id;
    $("sign-in").hidden = true;
    $("workspace").hidden = false;
    drawUsage(usage.by_day || []);
    $("user-id").focus();
  }

  function signOut() {
    sessionStorage.removeItem(STORAGE);
    key = null;
    location.reload();
  }

  function drawUsage(days) {
    const chart = $("usage-chart");
    chart.replaceChildren();
    if (days.length === 0) {
      chart.append(element("p", "No requests recorded yet.", "hint"));
      return;
    }
    const shown = days.slice(-30);
    const max = Math.max(1, ...shown.map((d) => d.requests || 0));
    const ns = "http://www.w3.org/2000/svg";
    const width = 24 * shown.length + 20;
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " 140");
    svg.setAttribute("width", String(width));
    svg.setAttribute("height", "140");
    shown.forEach((d, i) => {
      const h = Math.round(((d.requests || 0) / max) * 100);
      const bar = document.createElementNS(ns, "rect");
      bar.setAttribute("x", String(10 + i * 24));
      bar.setAttribute("y", String(118 - h));
      bar.setAttribute("width", "18");
      bar.setAttribute("height", String(h));
      const title = document.createElementNS(ns, "title");
      title.textContent = d.day + ": " + (d.requests || 0) + " requests";
      bar.append(title);
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", String(10 + i * 24));
      label.setAttribute("y", "132");
      label.textContent = String(d.day).slice(5);
      const count = document.createElementNS(ns, "text");
      count.setAttribute("x", String(10 + i * 24));
      count.setAttribute("y", String(114 - h));
      count.textContent = String(d.requests || 0);
      svg.append(bar, label, count);
    });
    chart.setAttribute(
      "aria-label",
      "requests per day: " + shown.map((d) => d.day + " " + (d.requests || 0)).join(", ")
    );
    chart.append(svg);
  }

  function showUser(user, learning) {
    const facts = $("user-facts");
    facts.replaceChildren();
    const rows = [
      ["User", user.user_id],
      ["Status", user.status],
      ["Enrollment", percent(user.enrollment_progress)],
      ["Learning", percent(user.learning_progress)],
      ["Samples", learning ? learning.samples : "–"],
      ["Net speech", learning ? (learning.net_speech_millis / 1000).toFixed(1) + " s" : "–"],
      ["Verified sessions", learning ? learning.sessions : "–"],
      ["Consent granted", user.opted_in_at || "–"],
      ["On the watchlist", user.is_greylisted ? "yes" : "no"],
    ];
    for (const [name, value] of rows) facts.append(element("dt", name), element("dd", value));
    $("user").hidden = false;
  }

  function signalText(signals) {
    if (!signals) return "–";
    const parts = ["voice " + signals.voice, "phrase " + signals.phrase, "liveness " + signals.liveness];
    for (const name of ["phrase", "liveness", "synthetic"]) {
      const score = signals[name + "_score"];
      if (typeof score === "number") {
        parts.push(name + " " + score.toFixed(2) + " / " + signals[name + "_threshold"].toFixed(2));
      }
    }
    return parts.join(" · ");
  }

  function scoreText(d) {
    const t = d.thresholds;
    const score = typeof d.score === "number" ? d.score.toFixed(3) : "hidden";
    if (!t) return typeof d.score === "number" ? score : "–";
    return (
      score + " (" + t.scale + ": accept ≥ " + t.accept.toFixed(3) + ", reject < " + t.reject.toFixed(3) + ")"
    );
  }

  function showDecisions(list) {
    const rows = $("decision-rows");
    rows.replaceChildren();
    for (const d of list) {
      const tr = element("tr");
      tr.dataset.decision = d.decision;
      const kind = d.decision === "error" ? "error-decision" : d.decision;
      tr.append(
        element("td", new Date(d.processed_at).toISOString().replace("T", " ").slice(0, 19)),
        element("td", d.job),
        element("td", d.decision, kind),
        element("td", scoreText(d)),
        element("td", signalText(d.signals)),
        element("td", (d.reasons || []).join(", "))
      );
      rows.append(tr);
    }
    if (list.length === 0) {
      const tr = element("tr");
      const td = element("td", "No decisions yet.");
      td.colSpan = 6;
      tr.append(td);
      rows.append(tr);
    }
    $("decisions").hidden = false;
  }

  async function showUserById(userId) {
    $("user-error").textContent = "";
    try {
      const user = await api("GET", "/v1/users/" + encodeURIComponent(userId));
      let learning = null;
      try {
        learning = await api("GET", "/v1/user-learning/" + encodeURIComponent(userId));
      } catch (e) {
        learning = null; // no profile yet: consent only
      }
      showUser(user, learning);
      const listed = await api("GET", "/v1/users/" + encodeURIComponent(userId) + "/decisions?limit=20");
      showDecisions(listed.decisions);
      drawUsage((await api("GET", "/v1/usage")).by_day || []);
    } catch (e) {
      $("user").hidden = true;
      $("decisions").hidden = true;
      $("user-error").textContent = e.code + ": " + e.message;
    }
  }

  async function clientToken(userId, scope) {
    return (await api("POST", "/v1/client-tokens", { user_id: userId, scope })).client_token;
  }

  const onLevel = (value) => {
    $("level").value = value;
  };

  // Shows the record button and resolves when it is pressed: the user
  // reads the prompt first, then speaks.
  function whenReady(prompt) {
    $("try-result").textContent = prompt;
    const button = $("try-record");
    button.hidden = false;
    button.focus();
    return new Promise((resolve) => {
      button.onclick = () => {
        button.hidden = true;
        button.onclick = null;
        $("try-result").textContent = "Recording…";
        resolve();
      };
    });
  }

  // One try at a time: a second click would strand the first flow.
  async function oneAtATime(flow) {
    const buttons = [$("try-enroll"), $("try-verify")];
    if (buttons.some((b) => b.disabled)) return;
    buttons.forEach((b) => (b.disabled = true));
    try {
      await flow();
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  async function tryEnroll() {
    const userId = $("user-id").value.trim();
    if (!userId) return $("user-id").focus();
    const result = $("try-result");
    if (!$("consent-given").checked) {
      result.textContent = "Enrollment needs the user's consent: tick the box first.";
      return $("consent-given").focus();
    }
    try {
      await api("POST", "/v1/consent", { user_id: userId, granted: true });
      const token = await clientToken(userId, "enroll");
      const done = await Timbre.enroll({
        token,
        baseUrl: location.origin,
        onLevel,
        onSample: (n) => whenReady("Sample " + n + ": press Start recording, then speak freely for five seconds."),
        onProgress: (p) => {
          result.textContent =
            "Sample " + p.sample + ": " + (p.status || p.decision) + ", enrollment " + percent(p.enrollmentProgress);
        },
      });
      result.textContent = "Enrollment: " + done.status + " (" + percent(done.enrollmentProgress) + ")";
    } catch (e) {
      result.textContent = "Enrollment failed: " + e.code + " – " + e.message;
    }
    showUserById(userId);
  }

  async function tryVerify() {
    const userId = $("user-id").value.trim();
    if (!userId) return $("user-id").focus();
    const result = $("try-result");
    result.dataset.decision = "";
    result.dataset.error = "";
    try {
      const token = await clientToken(userId, "verify");
      const outcome = await Timbre.verify({
        token,
        baseUrl: location.origin,
        // Six digits take about four seconds, after a moment to start.
        seconds: 7,
        onLevel,
        onChallenge: (digits) => {
          $("challenge").textContent = digits;
          return whenReady("Press Start recording, then say the digits.");
        },
      });
      result.dataset.decision = outcome.decision;
      result.dataset.reason = outcome.reason || "";
      result.textContent =
        outcome.decision === "accept"
          ? "Accepted: a voice token was issued."
          : "Not accepted: " + outcome.decision + " (" + outcome.reason + ")";
    } catch (e) {
      result.dataset.error = e.code || "error";
      result.textContent = "Verification failed: " + e.code + " – " + e.message;
    }
    $("challenge").textContent = "";
    showUserById(userId);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      $("sign-in-error").textContent = "";
      const typed = $("api-key").value.trim();
      $("api-key").value = "";
      signIn(typed).catch((e) => {
        key = null;
        $("sign-in-error").textContent = "Sign-in failed: " + e.code + " – " + e.message;
      });
    });
    $("user-form").addEventListener("submit", (event) => {
      event.preventDefault();
      showUserById($("user-id").value.trim());
    });
    $("sign-out").addEventListener("click", signOut);
    $("try-enroll").addEventListener("click", () => oneAtATime(tryEnroll));
    $("try-verify").addEventListener("click", () => oneAtATime(tryVerify));
    if (key) {
      signIn(key).catch((e) => {
        // Only a refused key ends the session; an outage does not.
        if (e.status === 401 || e.status === 403) return signOut();
        $("sign-in-error").textContent = "Sign-in failed: " + e.code + " – " + e.message;
      });
    }
  });
})();
