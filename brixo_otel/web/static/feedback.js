/*
 * brixo-otel thumbs widget: 👍 / 👎 (and an optional comment) for assistant messages.
 *
 * No dependencies, no build step. Load it from the feedback endpoint:
 *
 *   <script src="/brixo/feedback.js" defer></script>
 *
 * Every element carrying data-brixo-message-id and/or data-brixo-link gets thumbs buttons, also
 * elements added or given those attributes later (a streamed answer). Or tell it in code:
 *
 *   BrixoFeedback.fromResponse(response, element)  // Brixo-Message-Id / Brixo-Link headers
 *   BrixoFeedback.fromEvent(event.data, element)   // the first SSE event ("event: brixo")
 *   BrixoFeedback.attach(element, {messageId, link, conversationId})
 *
 * Options, as attributes of the script tag or BrixoFeedback.configure({...}):
 *   data-endpoint   where to POST (default: the directory the script was loaded from)
 *   data-comment    "true": offer a comment box after a click
 *   data-auto       "false": do not scan the page, attach() only
 *
 * A click is sent at once (so a rating given while the answer still streams is not lost), with
 * retries and exponential backoff on network errors, 408, 429 (honouring Retry-After) and 5xx.
 * When the page is hidden or unloaded, ratings still waiting for a retry go out with
 * navigator.sendBeacon; requests in flight use fetch keepalive, so they survive the unload too.
 */
(function () {
  "use strict";
  if (window.BrixoFeedback) {
    return;
  }

  var script = document.currentScript;
  var data = (script && script.dataset) || {};
  var config = {
    endpoint: data.endpoint || (script && script.src ? new URL("./", script.src).href : "/brixo/"),
    comment: data.comment === "true" || data.comment === "",
    maxAttempts: 6,
    baseDelayMs: 500,
    maxDelayMs: 30000,
  };
  var auto = data.auto !== "false";

  var MESSAGE_ID = "data-brixo-message-id";
  var LINK = "data-brixo-link";
  var CONVERSATION_ID = "data-brixo-conversation-id";
  var SELECTOR = "[" + MESSAGE_ID + "],[" + LINK + "]";
  var VALUES = [
    { value: "thumbs_up", label: "\uD83D\uDC4D", title: "Good answer" },
    { value: "thumbs_down", label: "\uD83D\uDC4E", title: "Bad answer" },
  ];

  // ---------------------------------------------------------------- sending, with retries

  var pending = new Map(); // key -> {payload, attempt, timer, inFlight, resolve, onRetry}
  var nextKey = 1;

  function post(payload) {
    return fetch(config.endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload),
      keepalive: true,
      credentials: "same-origin",
    });
  }

  function retryable(status) {
    return status === 408 || status === 429 || status >= 500;
  }

  function retryAfterMs(response) {
    var raw = response && response.headers.get("Retry-After");
    var seconds = raw ? parseInt(raw, 10) : NaN;
    return isNaN(seconds) ? 0 : seconds * 1000;
  }

  // Resolves with {ok, status, id | problem}; onRetry(delayMs), if given, hears of each retry.
  function send(payload, onRetry) {
    return new Promise(function (resolve) {
      var key = nextKey++;
      pending.set(key, {
        payload: payload, attempt: 0, timer: null, inFlight: false, resolve: resolve, onRetry: onRetry,
      });
      attempt(key);
    });
  }

  function attempt(key) {
    var entry = pending.get(key);
    if (!entry) {
      return;
    }
    entry.attempt += 1;
    entry.timer = null;
    entry.inFlight = true;
    post(entry.payload).then(
      function (response) {
        entry.inFlight = false;
        if (response.ok) {
          pending.delete(key);
          response.json().then(
            function (body) { entry.resolve({ ok: true, status: response.status, id: body && body.id }); },
            function () { entry.resolve({ ok: true, status: response.status }); }
          );
        } else if (retryable(response.status)) {
          retry(key, retryAfterMs(response), response.status);
        } else {
          pending.delete(key);
          response.json().then(
            function (problem) { entry.resolve({ ok: false, status: response.status, problem: problem }); },
            function () { entry.resolve({ ok: false, status: response.status }); }
          );
        }
      },
      function () {
        entry.inFlight = false;
        retry(key, 0, 0);
      }
    );
  }

  function retry(key, floorMs, status) {
    var entry = pending.get(key);
    if (!entry) {
      return;
    }
    if (entry.attempt >= config.maxAttempts) {
      pending.delete(key);
      entry.resolve({ ok: false, status: status, gaveUp: true });
      return;
    }
    var ceiling = Math.min(config.maxDelayMs, config.baseDelayMs * Math.pow(2, entry.attempt - 1));
    var delay = Math.max(floorMs, ceiling / 2 + Math.random() * ceiling / 2);
    entry.timer = setTimeout(function () { attempt(key); }, delay);
    if (entry.onRetry) {
      entry.onRetry(delay);
    }
  }

  function beaconPending() {
    pending.forEach(function (entry, key) {
      if (entry.inFlight) {
        return; // keepalive carries it to the end
      }
      clearTimeout(entry.timer);
      pending.delete(key);
      var body = JSON.stringify(entry.payload);
      var sent = false;
      try {
        sent = navigator.sendBeacon(config.endpoint, new Blob([body], { type: "application/json" }));
      } catch (e) {
        sent = false;
      }
      if (!sent) {
        try {
          post(entry.payload);
        } catch (e) {
          // the page is going away; nothing else can be done
        }
      }
      entry.resolve({ ok: true, beacon: true });
    });
  }

  window.addEventListener("pagehide", beaconPending);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") {
      beaconPending();
    }
  });

  // ---------------------------------------------------------------- the buttons

  var styled = false;
  function addStyle() {
    if (styled) {
      return;
    }
    styled = true;
    var style = document.createElement("style");
    style.textContent =
      ".brixo-feedback{display:flex;gap:.4em;align-items:center;margin-top:.4em;font-size:.9em}" +
      ".brixo-feedback button{cursor:pointer;border:1px solid #ccc;border-radius:1em;background:#fff;" +
      "padding:.1em .6em;font-size:1.1em;line-height:1.4}" +
      ".brixo-feedback button[aria-pressed=true]{background:#e8f0fe;border-color:#4a7bd0}" +
      ".brixo-feedback .brixo-status{color:#666}" +
      ".brixo-feedback form{display:flex;gap:.3em}" +
      ".brixo-feedback textarea{font:inherit;min-width:14em;height:1.6em}";
    document.head.appendChild(style);
  }

  function decodeId(raw) {
    if (!raw) {
      return null;
    }
    try {
      return decodeURIComponent(raw);
    } catch (e) {
      return raw;
    }
  }

  function Controller(element) {
    this.element = element;
    this.value = null;
    this.bar = null;
    this.status = null;
    this.form = null;
    this.buttons = {};
  }

  Controller.prototype.ids = function () {
    var el = this.element;
    return {
      message_id: el.getAttribute(MESSAGE_ID) || null,
      link: el.getAttribute(LINK) || null,
      conversation_id: el.getAttribute(CONVERSATION_ID) || null,
    };
  };

  Controller.prototype.render = function () {
    addStyle();
    var self = this;
    var bar = document.createElement("div");
    bar.className = "brixo-feedback";
    bar.setAttribute("role", "group");
    bar.setAttribute("aria-label", "Rate this answer");
    VALUES.forEach(function (option) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = option.label;
      button.title = option.title;
      button.setAttribute("aria-label", option.title);
      button.setAttribute("aria-pressed", "false");
      button.setAttribute("data-brixo-value", option.value);
      button.addEventListener("click", function () { self.rate(option.value); });
      self.buttons[option.value] = button;
      bar.appendChild(button);
    });
    var status = document.createElement("span");
    status.className = "brixo-status";
    status.setAttribute("aria-live", "polite");
    bar.appendChild(status);
    this.bar = bar;
    this.status = status;
    var slot = this.element.querySelector("[data-brixo-slot]");
    (slot || this.element).appendChild(bar);
  };

  Controller.prototype.setStatus = function (text, state) {
    this.status.textContent = text;
    this.bar.setAttribute("data-brixo-state", state);
  };

  Controller.prototype.rate = function (value, userMessage) {
    var self = this;
    var ids = this.ids();
    if (!ids.message_id && !ids.link) {
      this.setStatus("Nothing to rate yet", "error");
      return Promise.resolve({ ok: false, status: 0 });
    }
    this.value = value;
    Object.keys(this.buttons).forEach(function (name) {
      self.buttons[name].setAttribute("aria-pressed", name === value ? "true" : "false");
    });
    var payload = { value: value };
    Object.keys(ids).forEach(function (name) {
      if (ids[name]) {
        payload[name] = ids[name];
      }
    });
    if (userMessage) {
      payload.user_message = userMessage;
    }
    this.setStatus("Sending\u2026", "sending");
    if (config.comment && !userMessage) {
      this.offerComment();
    }
    var retrying = function () {
      if (self.value === value) {
        self.setStatus("Not sent yet, will retry", "retrying");
      }
    };
    return send(payload, retrying).then(function (result) {
      if (self.value === value) {
        if (result.ok) {
          self.setStatus(userMessage ? "Thanks for the comment" : "Thanks!", "sent");
        } else {
          var detail = result.problem && result.problem.detail;
          self.setStatus("Not sent" + (detail ? ": " + detail : ""), "error");
        }
      }
      self.element.dispatchEvent(
        new CustomEvent("brixo:feedback", { bubbles: true, detail: { value: value, result: result } })
      );
      return result;
    });
  };

  Controller.prototype.offerComment = function () {
    if (this.form) {
      return;
    }
    var self = this;
    var form = document.createElement("form");
    var text = document.createElement("textarea");
    text.placeholder = "Tell us more (optional)";
    text.maxLength = 4000;
    text.setAttribute("aria-label", "Comment");
    var submit = document.createElement("button");
    submit.type = "submit";
    submit.textContent = "Send";
    form.appendChild(text);
    form.appendChild(submit);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var comment = text.value.trim();
      if (comment && self.value) {
        form.remove();
        self.rate(self.value, comment);
      }
    });
    this.form = form;
    this.bar.insertBefore(form, this.status);
  };

  var controllers = new WeakMap();

  function attach(element, options) {
    options = options || {};
    if (options.messageId) {
      element.setAttribute(MESSAGE_ID, options.messageId);
    }
    if (options.link) {
      element.setAttribute(LINK, options.link);
    }
    if (options.conversationId) {
      element.setAttribute(CONVERSATION_ID, options.conversationId);
    }
    var controller = controllers.get(element);
    if (!controller) {
      controller = new Controller(element);
      controllers.set(element, controller);
      controller.render();
    }
    return controller;
  }

  function fromResponse(response, element) {
    var headers = response && response.headers;
    var messageId = decodeId(headers && headers.get("Brixo-Message-Id"));
    var link = headers && headers.get("Brixo-Link");
    if (!messageId && !link) {
      return null;
    }
    return attach(element, { messageId: messageId, link: link });
  }

  function fromEvent(eventData, element) {
    var values = eventData;
    if (typeof eventData === "string") {
      try {
        values = JSON.parse(eventData);
      } catch (e) {
        return null;
      }
    }
    if (!values || (!values.message_id && !values.link)) {
      return null;
    }
    return attach(element, { messageId: values.message_id, link: values.link });
  }

  function scan(root) {
    var scope = root || document;
    if (scope.nodeType === 1 && scope.matches(SELECTOR)) {
      attach(scope);
    }
    if (scope.querySelectorAll) {
      scope.querySelectorAll(SELECTOR).forEach(function (element) { attach(element); });
    }
  }

  function watch() {
    scan(document);
    new MutationObserver(function (records) {
      records.forEach(function (record) {
        if (record.type === "attributes") {
          scan(record.target);
        } else {
          record.addedNodes.forEach(function (node) {
            if (node.nodeType === 1) {
              scan(node);
            }
          });
        }
      });
    }).observe(document.documentElement, {
      subtree: true,
      childList: true,
      attributes: true,
      attributeFilter: [MESSAGE_ID, LINK],
    });
  }

  window.BrixoFeedback = {
    configure: function (options) {
      Object.keys(options || {}).forEach(function (name) {
        if (name in config) {
          config[name] = options[name];
        }
      });
      return Object.assign({}, config);
    },
    attach: attach,
    fromResponse: fromResponse,
    fromEvent: fromEvent,
    send: send,
    scan: scan,
    pendingCount: function () { return pending.size; },
  };

  if (auto) {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", watch);
    } else {
      watch();
    }
  }
})();
