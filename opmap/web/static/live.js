// opmap live page: polls Tiled's HTTP API (same origin) and draws the latest products.
// No external resource; the API key travels only in the Authorization header.
"use strict";
(function () {
  const API = "/api/v1";
  const KEY_STORE = "opmap-live-key";
  const state = { key: null, experiment: null, fixedExperiment: false, pollS: 5,
                  shown: "", echemPolls: 0 };

  // ---------- options from the address fragment (never sent to the server) ----------
  function readFragment() {
    const options = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    if (options.has("key")) {
      sessionStorage.setItem(KEY_STORE, options.get("key"));
      options.delete("key");  // out of the address bar and the history at once
      const rest = options.toString();
      history.replaceState(null, "", window.location.pathname + (rest ? "#" + rest : ""));
    }
    state.key = sessionStorage.getItem(KEY_STORE);
    if (options.get("experiment")) {
      state.experiment = options.get("experiment");
      state.fixedExperiment = true;
    }
    const poll = parseFloat(options.get("poll"));
    if (poll > 0) state.pollS = poll;
  }

  // ---------- Tiled HTTP API ----------
  class HttpError extends Error {
    constructor(status, path) { super(`HTTP ${status} for ${path}`); this.status = status; }
  }
  function quotePath(path) { return path.split("/").map(encodeURIComponent).join("/"); }
  async function request(path, accept) {
    const headers = {};
    if (state.key) headers["Authorization"] = "Apikey " + state.key;
    if (accept) headers["Accept"] = accept;
    const response = await fetch(API + path, { headers: headers, cache: "no-store" });
    if (!response.ok) throw new HttpError(response.status, path);
    return response;
  }
  async function getJson(path) { return (await request(path, "application/json")).json(); }
  const PAGE = "page%5Blimit%5D=";

  async function latestRuns() {
    const found = await getJson(`/search/raw?${PAGE}10&sort=-start.time&fields=metadata`);
    return found.data.map((entry) => entry.attributes.metadata);
  }

  async function children(path) {
    const nodes = {};
    let url = `/search/${quotePath(path)}?${PAGE}300&fields=structure&fields=metadata`;
    while (url) {
      const page = await getJson(url);
      for (const entry of page.data) nodes[entry.id] = entry.attributes;
      const next = page.links && page.links.next;
      url = next ? next.slice(next.indexOf(API) + API.length) : null;
    }
    return nodes;
  }

  function decode(buffer, dataType) {
    const view = new DataView(buffer);
    const little = dataType.endianness !== "big";
    const size = dataType.itemsize;
    const n = buffer.byteLength / size;
    const out = new Float64Array(n);
    const read = {
      f8: (o) => view.getFloat64(o, little), f4: (o) => view.getFloat32(o, little),
      i8: (o) => Number(view.getBigInt64(o, little)), i4: (o) => view.getInt32(o, little),
      i2: (o) => view.getInt16(o, little), i1: (o) => view.getInt8(o),
      u8: (o) => Number(view.getBigUint64(o, little)), u4: (o) => view.getUint32(o, little),
      u2: (o) => view.getUint16(o, little), u1: (o) => view.getUint8(o),
      b1: (o) => view.getUint8(o),
    }[dataType.kind + size];
    if (!read) throw new Error(`cannot decode data type ${dataType.kind}${size}`);
    for (let i = 0; i < n; i++) out[i] = read(i * size);
    return out;
  }

  async function readArray(path, node, index) {
    const slice = index === undefined ? "" : `?slice=${index}`;
    const response = await request(`/array/full/${quotePath(path)}${slice}`,
                                   "application/octet-stream");
    return decode(await response.arrayBuffer(), node.structure.data_type);
  }

  async function readTable(path) {
    try {
      return await getJson(`/table/full/${quotePath(path)}?format=application/json`);
    } catch (error) {
      if (error.status === 404) return null;
      throw error;
    }
  }

  // ---------- what to show ----------
  function runStatus(runs) {
    if (!runs.length) return "no runs in raw yet";
    const start = runs[0].start || {};
    const stop = runs[0].stop;
    let label = start.plan_name || "run";
    if (Number.isInteger(start.map_index)) label += ` map ${start.map_index + 1}`;
    if (start.purpose) label += `, ${start.purpose}`;
    if (!stop) return `acquiring: ${label} (scan ${start.scan_id})`;
    return `${stop.exit_status}: ${label} (scan ${start.scan_id})`;
  }

  async function latestVersion(experiment) {
    try {
      const found = await getJson(`/search/processed/${encodeURIComponent(experiment)}` +
                                  `?${PAGE}300&fields=`);
      const numbers = found.data.map((e) => /^v([1-9][0-9]*)$/.exec(e.id))
        .filter((m) => m).map((m) => parseInt(m[1], 10));
      return numbers.length ? "v" + Math.max(...numbers) : null;
    } catch (error) {
      if (error.status === 404) return null;
      throw error;
    }
  }

  function mapNames(nodes) {
    const isMap = (name) => {
      const dims = nodes[name].structure && nodes[name].structure.dims;
      return dims && dims.length === 3 && dims[0] === "map" && dims[1] === "z";
    };
    const families = Object.keys(nodes).filter((n) => /^c_(?!err_)/.test(n) && isMap(n))
      .map((n) => n.slice(2)).sort();
    const phases = Object.keys(nodes).filter((n) => /^phase_/.test(n) && isMap(n)).sort();
    return { families: families, phases: phases };
  }

  function nMaps(nodes) {
    const node = nodes.time_s || nodes.map;
    return node ? node.structure.shape[0] : 0;
  }

  // ---------- numbers ----------
  function finite(values) { return Array.from(values).filter((v) => Number.isFinite(v)); }
  function mean(values) {
    const ok = finite(values);
    return ok.length ? ok.reduce((a, b) => a + b, 0) / ok.length : NaN;
  }
  function range(values) {
    const ok = finite(values);
    if (!ok.length) return [0, 1];
    let lo = Math.min(...ok), hi = Math.max(...ok);
    if (hi === lo) { const pad = lo === 0 ? 1 : 0.05 * Math.abs(lo); lo -= pad; hi += pad; }
    return [lo, hi];
  }
  function niceTicks(lo, hi, count) {
    const raw = (hi - lo) / count;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((f) => f * power).find((s) => raw <= s);
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(t);
    return ticks;
  }
  function fmt(value, digits) { return Number.isFinite(value) ? value.toFixed(digits) : "nan"; }
  function timeUnit(maxS) {
    if (maxS > 3 * 3600) return { label: "h", scale: 3600 };
    if (maxS > 300) return { label: "min", scale: 60 };
    return { label: "s", scale: 1 };
  }

  // ---------- map panels (canvas, true aspect ratio) ----------
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function colour(t) {
    const s = Math.min(Math.max(t, 0), 1) * (VIRIDIS.length - 1);
    const i = Math.min(Math.floor(s), VIRIDIS.length - 2), f = s - i;
    return VIRIDIS[i].map((c, k) => Math.round(c + f * (VIRIDIS[i + 1][k] - c)));
  }
  function extent(coord) {
    const n = coord.length;
    const step = n > 1 ? Math.abs(coord[n - 1] - coord[0]) / (n - 1) : 1;
    return [Math.min(coord[0], coord[n - 1]) - step / 2, Math.max(coord[0], coord[n - 1]) + step / 2];
  }

  function drawMap(canvas, values, z, x) {
    const [x0, x1] = extent(x), [z0, z1] = extent(z);
    const box = 320, margin = { left: 44, bottom: 30, top: 6, right: 60 };
    const scale = box / Math.max(x1 - x0, z1 - z0);
    const w = Math.max(Math.round((x1 - x0) * scale), 20);
    const h = Math.max(Math.round((z1 - z0) * scale), 40);  // thin maps stay readable
    canvas.width = w + margin.left + margin.right;
    canvas.height = h + margin.top + margin.bottom;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    const [lo, hi] = range(values);
    const nz = z.length, nx = x.length;
    const cw = w / nx, ch = h / nz;
    for (let iz = 0; iz < nz; iz++) {
      for (let ix = 0; ix < nx; ix++) {
        const v = values[iz * nx + ix];
        ctx.fillStyle = Number.isFinite(v) ? `rgb(${colour((v - lo) / (hi - lo)).join(",")})`
                                           : "#ddd";
        // z grows upwards: row iz from the bottom
        ctx.fillRect(margin.left + ix * cw, margin.top + h - (iz + 1) * ch, cw + 0.5, ch + 0.5);
      }
    }
    const stretch = h / ((z1 - z0) * scale);  // > 1 when a thin map is drawn taller
    drawAxes(ctx, margin, w, h, [x0, x1], [z0, z1], stretch);
    drawColourbar(ctx, margin.left + w + 10, margin.top, h, lo, hi);
  }

  function drawAxes(ctx, margin, w, h, xr, zr, stretch) {
    ctx.strokeStyle = "#333"; ctx.fillStyle = "#333"; ctx.font = "10px sans-serif";
    ctx.strokeRect(margin.left, margin.top, w, h);
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (const t of niceTicks(xr[0], xr[1], Math.max(2, Math.floor(w / 60)))) {
      const px = margin.left + (t - xr[0]) / (xr[1] - xr[0]) * w;
      ctx.fillText(String(+t.toPrecision(4)), px, margin.top + h + 3);
    }
    ctx.fillText("x (µm)", margin.left + w / 2, margin.top + h + 16);
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (const t of niceTicks(zr[0], zr[1], Math.max(3, Math.floor(h / 30)))) {
      const py = margin.top + h - (t - zr[0]) / (zr[1] - zr[0]) * h;
      ctx.fillText(String(+t.toPrecision(4)), margin.left - 3, py);
    }
    ctx.save(); ctx.translate(10, margin.top + h / 2); ctx.rotate(-Math.PI / 2);
    const zLabel = stretch > 1.05 ? `z (µm, ×${+stretch.toPrecision(2)})` : "z (µm)";
    ctx.textAlign = "center"; ctx.fillText(zLabel, 0, 0); ctx.restore();
  }

  function drawColourbar(ctx, left, top, h, lo, hi) {
    for (let i = 0; i < h; i++) {
      ctx.fillStyle = `rgb(${colour(1 - i / h).join(",")})`;
      ctx.fillRect(left, top + i, 10, 1.5);
    }
    ctx.fillStyle = "#333"; ctx.textAlign = "left"; ctx.textBaseline = "top";
    ctx.fillText(String(+hi.toPrecision(5)), left + 13, top);
    ctx.textBaseline = "bottom";
    ctx.fillText(String(+lo.toPrecision(5)), left + 13, top + h);
  }

  function mapPanel(id, title, units, values, z, x, digits) {
    const panel = document.createElement("div");
    panel.className = "panel";
    const label = document.createElement("div");
    label.className = "title";
    label.textContent = title + (units ? ` (${units})` : "");
    const canvas = document.createElement("canvas");
    canvas.id = "map-" + id;
    drawMap(canvas, values, z, x);
    const summary = document.createElement("div");
    summary.className = "mean";
    summary.append("mean ");
    const number = document.createElement("span");
    number.id = "mean-" + id;
    number.textContent = fmt(mean(values), digits);
    summary.append(number, units ? ` ${units}` : "");
    panel.append(label, canvas, summary);
    return panel;
  }

  // ---------- curves (SVG) ----------
  const SVG = "http://www.w3.org/2000/svg";
  function svgNode(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function linePlot(svg, series, markers, xLabel, yLabel, fromZero) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const W = +svg.getAttribute("width"), H = +svg.getAttribute("height");
    const m = { left: 56, right: 12, top: 10, bottom: 36 };
    const w = W - m.left - m.right, h = H - m.top - m.bottom;
    const xs = series.flatMap((s) => Array.from(s.x)).concat(markers);
    const ys = series.flatMap((s) => Array.from(s.y));
    if (!finite(xs).length || !finite(ys).length) {
      svg.append(svgNode("text", { x: m.left, y: H / 2 }, "no data yet"));
      return;
    }
    const [x0, x1] = range(xs);
    const [y0, y1] = fromZero ? [0, Math.max(1, ...finite(ys)) * 1.05] : range(ys);
    const px = (v) => m.left + (v - x0) / (x1 - x0) * w;
    const py = (v) => m.top + h - (v - y0) / (y1 - y0) * h;
    svg.append(svgNode("rect", { x: m.left, y: m.top, width: w, height: h, class: "axis" }));
    for (const t of niceTicks(x0, x1, 5)) {
      svg.append(svgNode("text", { x: px(t), y: m.top + h + 13, "text-anchor": "middle" },
                         String(+t.toPrecision(4))));
    }
    for (const t of niceTicks(y0, y1, 4)) {
      svg.append(svgNode("text", { x: m.left - 4, y: py(t) + 3, "text-anchor": "end" },
                         String(+t.toPrecision(4))));
    }
    svg.append(svgNode("text", { x: m.left + w / 2, y: H - 6, "text-anchor": "middle" }, xLabel));
    svg.append(svgNode("text", { x: 12, y: m.top + h / 2, "text-anchor": "middle",
                                 transform: `rotate(-90 12 ${m.top + h / 2})` }, yLabel));
    for (const t of markers) {
      svg.append(svgNode("line", { x1: px(t), x2: px(t), y1: m.top, y2: m.top + h,
                                   class: "marker" }));
    }
    for (const s of series) {
      const points = [];
      for (let i = 0; i < s.x.length; i++) {
        if (Number.isFinite(s.x[i]) && Number.isFinite(s.y[i])) {
          points.push(`${px(s.x[i]).toFixed(1)},${py(s.y[i]).toFixed(1)}`);
        }
      }
      svg.append(svgNode("polyline", { points: points.join(" "), class: "line",
                                       stroke: s.colour }));
      if (s.dots) {
        for (const p of points) {
          const [cx, cy] = p.split(",");
          svg.append(svgNode("circle", { cx: cx, cy: cy, r: 3, fill: s.colour }));
        }
      }
    }
  }

  // ---------- one refresh ----------
  function setText(id, text) { document.getElementById(id).textContent = text; }

  async function drawFamilies(base, nodes, names, latest, z, x) {
    const wanted = [];  // [id, title, units, array name, digits], read in parallel
    for (const family of names.families) {
      wanted.push([`c-${family}`, `c, ${family}`, "Å", `c_${family}`, 5]);
      if (nodes[`x_li_${family}`]) {
        wanted.push([`x-${family}`, `x in LixCoO2, ${family}`, "", `x_li_${family}`, 4]);
      }
    }
    await drawPanels("family-maps", base, nodes, wanted, latest, z, x);
  }

  async function drawPhases(base, nodes, names, latest, z, x) {
    const wanted = names.phases.map((name) =>
      [name.replace(/_/g, "-"), name.slice(6), "", name, 3]);
    await drawPanels("phase-maps", base, nodes, wanted, latest, z, x);
  }

  async function drawPanels(holderId, base, nodes, wanted, latest, z, x) {
    const maps = await Promise.all(
      wanted.map((w) => readArray(`${base}/${w[3]}`, nodes[w[3]], latest)));
    const panels = wanted.map((w, i) => mapPanel(w[0], w[1], w[2], maps[i], z, x, w[4]));
    document.getElementById(holderId).replaceChildren(...panels);
  }

  async function drawCurves(base, nodes, mapTimes) {
    const unit = timeUnit(Math.max(1, ...finite(mapTimes)));
    const marks = Array.from(mapTimes).map((t) => t / unit.scale);
    const echem = await readTable(`${base}-tables/electrochemistry`);
    if (echem && echem.time_s) {
      const t = echem.time_s.map((v) => v / unit.scale);
      linePlot(document.getElementById("echem-plot"),
               [{ x: t, y: echem.potential_v, colour: "#1f77b4" }], marks,
               `time (${unit.label})`, "potential (V)");
    }
    if (nodes.grains_total) {
      const total = await readArray(`${base}/grains_total`, nodes.grains_total);
      setText("grains-latest", String(total[total.length - 1]));
      const series = [{ x: marks, y: total, colour: "#d62728", dots: true }];
      if (nodes.grains_new) {
        const fresh = await readArray(`${base}/grains_new`, nodes.grains_new);
        series.push({ x: marks, y: fresh, colour: "#2ca02c", dots: true });
      }
      linePlot(document.getElementById("grains-plot"), series, [], `time (${unit.label})`,
               "grains (red: total, green: new)", true);
    }
  }

  async function drawProducts(experiment, version, nodes) {
    const base = `processed/${experiment}/${version}`;
    const n = nMaps(nodes);
    const names = mapNames(nodes);
    const read = (name) => (nodes[name] ? readArray(`${base}/${name}`, nodes[name]) : []);
    const [z, x, times] = await Promise.all([read("z"), read("x"), read("time_s")]);
    if (n > 0 && z.length && x.length) {
      await drawFamilies(base, nodes, names, n - 1, z, x);
      await drawPhases(base, nodes, names, n - 1, z, x);
    }
    await drawCurves(base, nodes, times);
    setText("latest-time", times.length ? `${fmt(times[times.length - 1], 1)} s` : "–");
  }

  async function refresh() {
    const runs = await latestRuns();
    setText("status", runStatus(runs));
    if (!state.fixedExperiment) {
      const withExperiment = runs.find((r) => r.start && r.start.experiment_id);
      if (withExperiment) state.experiment = withExperiment.start.experiment_id;
    }
    if (!state.experiment) return;
    setText("experiment-id", state.experiment);
    const version = await latestVersion(state.experiment);
    if (!version) { setText("n-maps", "0"); return; }
    setText("version", version);
    const nodes = await children(`processed/${state.experiment}/${version}`);
    const n = nMaps(nodes);
    const shown = `${state.experiment}/${version}/${n}`;
    state.echemPolls += 1;
    if (shown !== state.shown || state.echemPolls >= 6) {
      await drawProducts(state.experiment, version, nodes);
      state.shown = shown;
      state.echemPolls = 0;
    }
    setText("n-maps", String(n));  // last: a reader of n-maps sees the maps drawn
  }

  async function poll() {
    try {
      await refresh();
      setText("error", "");
      setText("updated", new Date().toISOString().replace("T", " ").slice(0, 19) + " UTC");
    } catch (error) {
      setText("error", String(error.message || error));
      if (error.status === 401 || error.status === 403) {
        document.getElementById("key-form").hidden = false;
      }
    }
    window.setTimeout(poll, state.pollS * 1000);
  }

  function main() {
    readFragment();
    const form = document.getElementById("key-form");
    form.hidden = Boolean(state.key);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const input = document.getElementById("key-input");
      sessionStorage.setItem(KEY_STORE, input.value.trim());
      state.key = input.value.trim();
      input.value = "";
      form.hidden = true;
    });
    poll();
  }

  main();
})();
