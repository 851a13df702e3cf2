/*!
 * Driftwood Static — demo front-end for the edge-cdn sample site.
 * Shows what the edge and origin say about each asset: status, cache headers,
 * validators, ranges and content encodings. No framework, no build step.
 * (c) edge-cdn contributors, MIT licence.
 */
(function (global) {
  "use strict";

  // ---------------------------------------------------------------------------
  // Small utilities
  // ---------------------------------------------------------------------------

  var UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

  function formatBytes(n) {
    if (n === null || n === undefined || isNaN(n)) return "–";
    var i = 0;
    var value = Number(n);
    while (value >= 1024 && i < UNITS.length - 1) {
      value /= 1024;
      i += 1;
    }
    var digits = i === 0 ? 0 : value < 10 ? 2 : value < 100 ? 1 : 0;
    return value.toFixed(digits) + " " + UNITS[i];
  }

  function formatDuration(ms) {
    if (ms < 1) return (ms * 1000).toFixed(0) + " µs";
    if (ms < 1000) return ms.toFixed(ms < 10 ? 2 : 0) + " ms";
    return (ms / 1000).toFixed(2) + " s";
  }

  function formatRate(bytes, ms) {
    if (!ms) return "–";
    return formatBytes((bytes * 1000) / ms) + "/s";
  }

  function now() {
    return global.performance && performance.now ? performance.now() : Date.now();
  }

  function $(selector, root) {
    return (root || document).querySelector(selector);
  }

  function $all(selector, root) {
    return Array.prototype.slice.call((root || document).querySelectorAll(selector));
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (key) {
        var value = attrs[key];
        if (value === null || value === undefined || value === false) return;
        if (key === "className") node.className = value;
        else if (key === "text") node.textContent = value;
        else if (key.slice(0, 2) === "on" && typeof value === "function") {
          node.addEventListener(key.slice(2).toLowerCase(), value);
        } else if (key === "dataset") {
          Object.keys(value).forEach(function (d) {
            node.dataset[d] = value[d];
          });
        } else node.setAttribute(key, value === true ? "" : String(value));
      });
    }
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) return;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function debounce(fn, wait) {
    var timer = null;
    return function () {
      var args = arguments;
      var self = this;
      clearTimeout(timer);
      timer = setTimeout(function () {
        fn.apply(self, args);
      }, wait);
    };
  }

  function toHex(buffer) {
    var bytes = new Uint8Array(buffer);
    var out = "";
    for (var i = 0; i < bytes.length; i++) {
      out += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16);
    }
    return out;
  }

  // ---------------------------------------------------------------------------
  // A tiny event emitter, used by the download manager and the probe table
  // ---------------------------------------------------------------------------

  function Emitter() {
    this._handlers = {};
  }

  Emitter.prototype.on = function (name, handler) {
    (this._handlers[name] = this._handlers[name] || []).push(handler);
    var self = this;
    return function off() {
      self._handlers[name] = (self._handlers[name] || []).filter(function (h) {
        return h !== handler;
      });
    };
  };

  Emitter.prototype.emit = function (name, payload) {
    (this._handlers[name] || []).slice().forEach(function (handler) {
      try {
        handler(payload);
      } catch (err) {
        console.error("[driftwood] handler for", name, "failed:", err);
      }
    });
  };

  // ---------------------------------------------------------------------------
  // Response inspection
  // ---------------------------------------------------------------------------

  var INTERESTING = [
    "content-type",
    "content-length",
    "content-encoding",
    "content-range",
    "cache-control",
    "etag",
    "last-modified",
    "vary",
    "age",
    "cache-status",
    "x-cache",
    "via"
  ];

  function pickHeaders(headers) {
    var out = {};
    INTERESTING.forEach(function (name) {
      var value = headers.get(name);
      if (value !== null) out[name] = value;
    });
    return out;
  }

  function parseCacheControl(value) {
    var directives = {};
    if (!value) return directives;
    value.split(",").forEach(function (part) {
      var trimmed = part.trim();
      if (!trimmed) return;
      var eq = trimmed.indexOf("=");
      if (eq === -1) directives[trimmed.toLowerCase()] = true;
      else {
        var raw = trimmed.slice(eq + 1).trim();
        if (raw.charAt(0) === '"') raw = raw.slice(1, -1);
        directives[trimmed.slice(0, eq).trim().toLowerCase()] = raw;
      }
    });
    return directives;
  }

  function describeCaching(headers) {
    var cc = parseCacheControl(headers["cache-control"]);
    if (cc["no-store"]) return "never stored";
    if (cc["no-cache"]) return "stored, revalidated every time";
    var maxAge = cc["s-maxage"] || cc["max-age"];
    if (maxAge !== undefined) {
      var seconds = parseInt(maxAge, 10);
      var label =
        seconds >= 86400 * 300
          ? Math.round(seconds / 86400 / 365) + " year"
          : seconds >= 86400
          ? Math.round(seconds / 86400) + " days"
          : seconds >= 3600
          ? Math.round(seconds / 3600) + " h"
          : seconds >= 60
          ? Math.round(seconds / 60) + " min"
          : seconds + " s";
      return "fresh for " + label + (cc.immutable ? ", immutable" : "");
    }
    return "heuristic freshness";
  }

  function cacheVerdict(headers) {
    var status = headers["cache-status"] || "";
    var xcache = (headers["x-cache"] || "").toUpperCase();
    if (/;\s*hit\b/.test(status) || xcache === "HIT") return { label: "HIT", className: "hit" };
    if (/fwd=stale/.test(status)) return { label: "REVALIDATED", className: "stale" };
    if (/fwd=/.test(status) || xcache === "MISS") return { label: "MISS", className: "miss" };
    return { label: "ORIGIN", className: "origin" };
  }

  // ---------------------------------------------------------------------------
  // Asset probe table: one HEAD (or ranged GET) per asset in the manifest
  // ---------------------------------------------------------------------------

  function ProbeTable(root, manifest) {
    Emitter.call(this);
    this.root = root;
    this.manifest = manifest;
    this.rows = {};
    this.body = $("tbody", root);
  }

  ProbeTable.prototype = Object.create(Emitter.prototype);
  ProbeTable.prototype.constructor = ProbeTable;

  ProbeTable.prototype.render = function () {
    var self = this;
    this.body.textContent = "";
    this.manifest.assets.forEach(function (asset) {
      var row = el("tr", { dataset: { path: asset.path } }, [
        el("td", {}, [el("a", { href: asset.path, text: asset.path })]),
        el("td", { className: "kind", text: asset.kind }),
        el("td", { className: "status", text: "…" }),
        el("td", { className: "size", text: "" }),
        el("td", { className: "encoding", text: "" }),
        el("td", { className: "policy", text: "" }),
        el("td", { className: "verdict", text: "" }),
        el("td", { className: "time", text: "" })
      ]);
      self.rows[asset.path] = row;
      self.body.appendChild(row);
    });
  };

  ProbeTable.prototype.probe = function (asset) {
    var row = this.rows[asset.path];
    var self = this;
    var started = now();
    var init = { method: "HEAD", cache: "no-store" };
    return fetch(asset.path, init)
      .then(function (response) {
        var headers = pickHeaders(response.headers);
        var verdict = cacheVerdict(headers);
        $(".status", row).textContent = String(response.status);
        $(".size", row).textContent = formatBytes(parseInt(headers["content-length"], 10));
        $(".encoding", row).textContent = headers["content-encoding"] || "identity";
        $(".policy", row).textContent = describeCaching(headers);
        $(".policy", row).title = headers["cache-control"] || "";
        var badge = $(".verdict", row);
        badge.textContent = verdict.label;
        badge.className = "verdict " + verdict.className;
        $(".time", row).textContent = formatDuration(now() - started);
        row.title = Object.keys(headers)
          .map(function (k) {
            return k + ": " + headers[k];
          })
          .join("\n");
        self.emit("probed", { asset: asset, headers: headers, status: response.status });
      })
      .catch(function (err) {
        $(".status", row).textContent = "error";
        row.title = String(err);
        self.emit("failed", { asset: asset, error: err });
      });
  };

  ProbeTable.prototype.probeAll = function () {
    var self = this;
    return this.manifest.assets.reduce(function (chain, asset) {
      return chain.then(function () {
        return self.probe(asset);
      });
    }, Promise.resolve());
  };

  // ---------------------------------------------------------------------------
  // Range explorer: ask for a slice of the big download and show the answer
  // ---------------------------------------------------------------------------

  function parseContentRange(value) {
    var match = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value || "");
    if (!match) return null;
    return {
      start: parseInt(match[1], 10),
      end: parseInt(match[2], 10),
      total: match[3] === "*" ? null : parseInt(match[3], 10)
    };
  }

  function RangeExplorer(form, output) {
    this.form = form;
    this.output = output;
    var self = this;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      self.run();
    });
  }

  RangeExplorer.prototype.run = function () {
    var path = this.form.elements.path.value;
    var spec = this.form.elements.range.value.trim();
    var output = this.output;
    var started = now();
    output.textContent = "requesting " + path + " with Range: " + spec + " …";
    return fetch(path, { headers: { Range: spec }, cache: "no-store" })
      .then(function (response) {
        return response.arrayBuffer().then(function (body) {
          var range = parseContentRange(response.headers.get("content-range"));
          var lines = [
            "HTTP " + response.status + " " + (response.statusText || ""),
            "Content-Range: " + (response.headers.get("content-range") || "(none)"),
            "Content-Length: " + (response.headers.get("content-length") || "(none)"),
            "received " + formatBytes(body.byteLength) + " in " + formatDuration(now() - started)
          ];
          if (range && range.end - range.start + 1 !== body.byteLength) {
            lines.push("warning: body length does not match Content-Range");
          }
          var preview = new Uint8Array(body.slice(0, 16));
          lines.push("first bytes: " + toHex(preview.buffer).replace(/(..)/g, "$1 ").trim());
          output.textContent = lines.join("\n");
        });
      })
      .catch(function (err) {
        output.textContent = "failed: " + err;
      });
  };

  // ---------------------------------------------------------------------------
  // Download manager: stream a big file, show progress and throughput, and
  // verify its SHA-256 when the browser can do it
  // ---------------------------------------------------------------------------

  function Download(url, expectedSize) {
    Emitter.call(this);
    this.url = url;
    this.expectedSize = expectedSize || null;
    this.received = 0;
    this.controller = null;
    this.chunks = [];
  }

  Download.prototype = Object.create(Emitter.prototype);
  Download.prototype.constructor = Download;

  Download.prototype.start = function () {
    var self = this;
    var started = now();
    this.controller = typeof AbortController === "function" ? new AbortController() : null;
    this.received = 0;
    this.chunks = [];
    var init = { cache: "no-store" };
    if (this.controller) init.signal = this.controller.signal;
    return fetch(this.url, init).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      var total = parseInt(response.headers.get("content-length"), 10) || self.expectedSize;
      self.emit("start", { total: total, headers: pickHeaders(response.headers) });
      if (!response.body || !response.body.getReader) {
        return response.arrayBuffer().then(function (buffer) {
          self.received = buffer.byteLength;
          self.chunks = [new Uint8Array(buffer)];
          self.emit("progress", { received: self.received, total: total, elapsed: now() - started });
          return self.finish(started);
        });
      }
      var reader = response.body.getReader();
      var report = throttle(function () {
        self.emit("progress", { received: self.received, total: total, elapsed: now() - started });
      }, 80);
      function pump() {
        return reader.read().then(function (step) {
          if (step.done) {
            self.emit("progress", { received: self.received, total: total, elapsed: now() - started });
            return self.finish(started);
          }
          self.received += step.value.byteLength;
          self.chunks.push(step.value);
          report();
          return pump();
        });
      }
      return pump();
    });
  };

  Download.prototype.finish = function (started) {
    var self = this;
    var elapsed = now() - started;
    var summary = { received: this.received, elapsed: elapsed, sha256: null };
    if (!global.crypto || !crypto.subtle || !global.Blob) {
      this.emit("done", summary);
      return Promise.resolve(summary);
    }
    return new Blob(this.chunks)
      .arrayBuffer()
      .then(function (buffer) {
        return crypto.subtle.digest("SHA-256", buffer);
      })
      .then(function (digest) {
        summary.sha256 = toHex(digest);
        self.chunks = [];
        self.emit("done", summary);
        return summary;
      });
  };

  Download.prototype.abort = function () {
    if (this.controller) this.controller.abort();
  };

  function throttle(fn, wait) {
    var last = 0;
    var pending = null;
    return function () {
      var t = now();
      if (t - last >= wait) {
        last = t;
        fn();
      } else if (!pending) {
        pending = setTimeout(function () {
          pending = null;
          last = now();
          fn();
        }, wait - (t - last));
      }
    };
  }

  function bindDownload(card) {
    var button = $("button", card);
    var bar = $("progress", card);
    var status = $(".download-status", card);
    var url = card.getAttribute("data-url");
    var expected = parseInt(card.getAttribute("data-size"), 10);
    var current = null;

    button.addEventListener("click", function () {
      if (current) {
        current.abort();
        return;
      }
      current = new Download(url, expected);
      button.textContent = "Cancel";
      bar.value = 0;
      current.on("start", function (info) {
        bar.max = info.total || 1;
        status.textContent = "0 of " + formatBytes(info.total);
      });
      current.on("progress", function (p) {
        bar.value = p.received;
        status.textContent =
          formatBytes(p.received) +
          " of " +
          formatBytes(p.total) +
          " · " +
          formatRate(p.received, p.elapsed);
      });
      current.on("done", function (summary) {
        status.textContent =
          formatBytes(summary.received) +
          " in " +
          formatDuration(summary.elapsed) +
          (summary.sha256 ? " · sha256 " + summary.sha256.slice(0, 16) + "…" : "");
      });
      current
        .start()
        .catch(function (err) {
          status.textContent = err && err.name === "AbortError" ? "cancelled" : "failed: " + err;
        })
        .then(function () {
          current = null;
          button.textContent = "Download again";
        });
    });
  }

  // ---------------------------------------------------------------------------
  // Theme: follows the system, remembers an explicit choice
  // ---------------------------------------------------------------------------

  var THEME_KEY = "driftwood:theme";

  function storedTheme() {
    try {
      return global.localStorage ? localStorage.getItem(THEME_KEY) : null;
    } catch (err) {
      return null;
    }
  }

  function applyTheme(theme) {
    var root = document.documentElement;
    if (theme === "light" || theme === "dark") root.setAttribute("data-theme", theme);
    else root.removeAttribute("data-theme");
  }

  function bindThemeToggle(button) {
    applyTheme(storedTheme());
    button.addEventListener("click", function () {
      var current = document.documentElement.getAttribute("data-theme");
      var prefersDark =
        global.matchMedia && matchMedia("(prefers-color-scheme: dark)").matches;
      var next = current ? (current === "dark" ? "light" : "dark") : prefersDark ? "light" : "dark";
      applyTheme(next);
      try {
        localStorage.setItem(THEME_KEY, next);
      } catch (err) {
        /* private mode: the choice lasts for this page only */
      }
    });
  }

  // ---------------------------------------------------------------------------
  // Timing panel: what the browser measured for each resource of this page
  // ---------------------------------------------------------------------------

  function renderTimings(list) {
    if (!global.performance || !performance.getEntriesByType) return;
    var entries = performance.getEntriesByType("resource").concat(
      performance.getEntriesByType("navigation")
    );
    list.textContent = "";
    entries
      .sort(function (a, b) {
        return a.startTime - b.startTime;
      })
      .forEach(function (entry) {
        var name = entry.name.replace(location.origin, "") || "/";
        var transfer = entry.transferSize;
        var fromCache = transfer === 0 && entry.decodedBodySize > 0;
        list.appendChild(
          el("li", {}, [
            el("code", { text: name }),
            " ",
            el("span", {
              className: "timing",
              text:
                formatDuration(entry.duration) +
                " · " +
                (fromCache ? "browser cache" : formatBytes(transfer) + " over the wire") +
                (entry.nextHopProtocol ? " · " + entry.nextHopProtocol : "")
            })
          ])
        );
      });
  }

  // ---------------------------------------------------------------------------
  // Boot
  // ---------------------------------------------------------------------------

  function loadManifest(url) {
    return fetch(url, { cache: "no-cache" }).then(function (response) {
      if (!response.ok) throw new Error("manifest: HTTP " + response.status);
      return response.json();
    });
  }

  function boot() {
    var themeButton = $("#theme-toggle");
    if (themeButton) bindThemeToggle(themeButton);
    $all(".download-card").forEach(bindDownload);

    var rangeForm = $("#range-form");
    if (rangeForm) new RangeExplorer(rangeForm, $("#range-output"));

    var timingList = $("#timings");
    if (timingList) {
      var refresh = debounce(function () {
        renderTimings(timingList);
      }, 250);
      refresh();
      if (global.PerformanceObserver) {
        try {
          new PerformanceObserver(refresh).observe({ type: "resource", buffered: true });
        } catch (err) {
          /* older browsers: the list is rendered once */
        }
      }
    }

    var table = $("#probe-table");
    if (!table) return;
    loadManifest(table.getAttribute("data-manifest"))
      .then(function (manifest) {
        var probes = new ProbeTable(table, manifest);
        probes.render();
        var counts = { HIT: 0, MISS: 0, ORIGIN: 0, REVALIDATED: 0 };
        probes.on("probed", function (result) {
          counts[cacheVerdict(result.headers).label] += 1;
          $("#probe-summary").textContent = Object.keys(counts)
            .filter(function (k) {
              return counts[k];
            })
            .map(function (k) {
              return counts[k] + " " + k.toLowerCase();
            })
            .join(", ");
        });
        var rerun = $("#probe-again");
        if (rerun) {
          rerun.addEventListener("click", function () {
            counts = { HIT: 0, MISS: 0, ORIGIN: 0, REVALIDATED: 0 };
            probes.probeAll();
          });
        }
        return probes.probeAll();
      })
      .catch(function (err) {
        $("#probe-summary").textContent = "could not load the asset manifest: " + err;
      });
  }

  global.Driftwood = {
    formatBytes: formatBytes,
    formatDuration: formatDuration,
    parseCacheControl: parseCacheControl,
    parseContentRange: parseContentRange,
    describeCaching: describeCaching,
    Download: Download,
    version: "1.4.2"
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})(window);
