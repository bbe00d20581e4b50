// RefCut annotation page: plain JS + canvas, no dependencies, no build step.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ API
  async function api(method, url, body) {
    const options = { method, headers: {} };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (error) {
      throw new Error("the RefCut server is not reachable (was it stopped?)");
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = { detail: text }; }
    if (!response.ok) {
      const error = new Error((data && data.detail) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  // ------------------------------------------------------------------ masks (COCO RLE)
  function rleCounts(rle) {
    if (Array.isArray(rle.counts)) return rle.counts;
    const s = rle.counts, counts = [];
    let p = 0;
    while (p < s.length) {
      let x = 0, k = 0, more = 1;
      while (more) {
        const c = s.charCodeAt(p) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = c & 0x20;
        p++; k++;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (counts.length > 2) x += counts[counts.length - 2];
      counts.push(x);
    }
    return counts;
  }

  /** Row-major Uint8Array bitmap of a COCO RLE (which is column-major). */
  function rleToBits(rle) {
    const h = rle.size[0], w = rle.size[1];
    const bits = new Uint8Array(w * h);
    let index = 0, value = 0;
    for (const run of rleCounts(rle)) {
      if (value) {
        for (let i = index; i < index + run; i++) {
          const x = (i / h) | 0;
          bits[(i - x * h) * w + x] = 1;
        }
      }
      index += run;
      value ^= 1;
    }
    return { w, h, bits };
  }

  function hexToRgb(hex) {
    const n = parseInt(hex.slice(1), 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }

  /** A canvas with the mask filled (alpha fillA) and its boundary drawn (alpha edgeA). */
  function maskCanvas(m, hex, fillA, edgeA) {
    const { w, h, bits } = m;
    const canvas = document.createElement("canvas");
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(w, h);
    const d = image.data;
    const [r, g, b] = hexToRgb(hex);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        if (!bits[i]) continue;
        const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
          !bits[i - 1] || !bits[i + 1] || !bits[i - w] || !bits[i + w];
        const o = i * 4;
        d[o] = r; d[o + 1] = g; d[o + 2] = b; d[o + 3] = edge ? edgeA : fillA;
      }
    }
    ctx.putImageData(image, 0, 0);
    return canvas;
  }

  // ------------------------------------------------------------------ viewer (fit, zoom, pan, coords)
  class Viewer {
    constructor(canvas, drawLayers) {
      this.canvas = canvas;
      this.ctx = canvas.getContext("2d");
      this.drawLayers = drawLayers;
      this.img = null;
      this.scale = 1; this.ox = 0; this.oy = 0;
      this.pan = null;
      new ResizeObserver(() => this.resize()).observe(canvas.parentElement);
      canvas.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
      canvas.addEventListener("mousedown", (e) => {
        if (e.button === 1) { e.preventDefault(); this.pan = { x: e.clientX, y: e.clientY, ox: this.ox, oy: this.oy }; }
      });
      window.addEventListener("mousemove", (e) => {
        if (!this.pan) return;
        const k = this.pixelRatio();
        this.ox = this.pan.ox + (e.clientX - this.pan.x) * k;
        this.oy = this.pan.oy + (e.clientY - this.pan.y) * k;
        this.draw();
      });
      window.addEventListener("mouseup", () => { this.pan = null; });
      this.resize();
    }
    pixelRatio() {
      const rect = this.canvas.getBoundingClientRect();
      return rect.width ? this.canvas.width / rect.width : 1;
    }
    resize() {
      const rect = this.canvas.getBoundingClientRect();
      const dpr = window.devicePixelRatio || 1;
      const width = Math.max(1, Math.round(rect.width * dpr)), height = Math.max(1, Math.round(rect.height * dpr));
      if (width === this.canvas.width && height === this.canvas.height) return;
      this.canvas.width = width; this.canvas.height = height;
      this.fit();
    }
    setImage(img) { this.img = img; this.fit(); }
    fit() {
      if (this.img) {
        const W = this.canvas.width, H = this.canvas.height;
        this.scale = Math.min(W / this.img.width, H / this.img.height) * 0.98;
        this.ox = (W - this.img.width * this.scale) / 2;
        this.oy = (H - this.img.height * this.scale) / 2;
      }
      this.draw();
    }
    onWheel(e) {
      if (!this.img) return;
      e.preventDefault();
      const rect = this.canvas.getBoundingClientRect(), k = this.pixelRatio();
      const cx = (e.clientX - rect.left) * k, cy = (e.clientY - rect.top) * k;
      const factor = Math.exp(-e.deltaY * 0.0015);
      const scale = Math.min(40, Math.max(0.05, this.scale * factor));
      this.ox = cx - (cx - this.ox) * scale / this.scale;
      this.oy = cy - (cy - this.oy) * scale / this.scale;
      this.scale = scale;
      this.draw();
    }
    /** Image pixel coordinates of a mouse event (getBoundingClientRect + canvas scale + view). */
    toImage(e) {
      const rect = this.canvas.getBoundingClientRect(), k = this.pixelRatio();
      const cx = (e.clientX - rect.left) * k, cy = (e.clientY - rect.top) * k;
      return { x: (cx - this.ox) / this.scale, y: (cy - this.oy) / this.scale };
    }
    inside(p) { return this.img && p.x >= 0 && p.y >= 0 && p.x <= this.img.width - 1 && p.y <= this.img.height - 1; }
    draw() {
      const ctx = this.ctx;
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
      if (!this.img) return;
      ctx.setTransform(this.scale, 0, 0, this.scale, this.ox, this.oy);
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(this.img, 0, 0);
      ctx.imageSmoothingEnabled = false;
      this.drawLayers(ctx, this);
    }
    /** Radius in image pixels that looks like ``px`` CSS pixels on screen. */
    screen(px) { return (px * (window.devicePixelRatio || 1)) / this.scale; }
  }

  function drawClicks(ctx, viewer, clicks) {
    const r = viewer.screen(7);
    ctx.lineWidth = viewer.screen(1.5);
    for (const c of clicks) {
      ctx.beginPath();
      ctx.arc(c.x, c.y, r, 0, 2 * Math.PI);
      ctx.fillStyle = c.positive ? "#22c55e" : "#ef4444";
      ctx.fill();
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
      ctx.beginPath();
      const a = r * 0.55;
      ctx.moveTo(c.x - a, c.y); ctx.lineTo(c.x + a, c.y);
      if (c.positive) { ctx.moveTo(c.x, c.y - a); ctx.lineTo(c.x, c.y + a); }
      ctx.stroke();
    }
  }

  function loadImageElement(url) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("the browser could not display this image"));
      img.src = url;
    });
  }

  async function fetchImage(imageId) {
    const response = await fetch(`/api/images/${imageId}/file`);
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail; } catch (_) { /* keep status text */ }
      throw new Error(detail);
    }
    return loadImageElement(URL.createObjectURL(await response.blob()));
  }

  // ------------------------------------------------------------------ state
  const S = {
    project: null, images: [], index: -1, imageId: null, labels: [], labelId: null,
    clicks: [], steps: [], instances: [], selected: null, busy: 0, review: null, loadSeq: 0,
    predicting: false, predictAgain: false,
    clickedAt: [],  // performance.now() of each click, for the step's shownMs (click to mask drawn)
  };
  window.refcutState = S;  // for debugging and tests

  const canvas = $("canvas");
  const viewer = new Viewer(canvas, drawMain);
  window.refcutViewer = viewer;

  function label(id) { return S.labels.find((l) => l.id === id) || null; }
  function labelColour(id) { const l = label(id); return l ? l.colour : "#ffffff"; }
  function currentStep() { return S.clicks.length ? S.steps[S.clicks.length - 1] || null : null; }

  function drawMain(ctx, v) {
    for (const inst of S.instances) {
      if (!inst.canvas) continue;
      const selected = S.selected === inst.id;
      ctx.globalAlpha = selected ? 1 : 0.85;
      ctx.drawImage(selected ? inst.canvasSelected : inst.canvas, 0, 0);
    }
    ctx.globalAlpha = 1;
    const step = currentStep() || lastShownStep();
    if (step) ctx.drawImage(step.canvas, 0, 0);
    drawClicks(ctx, v, S.clicks);
  }

  // While a new click is being computed, keep showing the previous mask.
  function lastShownStep() {
    for (let i = S.clicks.length - 1; i >= 0; i--) if (S.steps[i]) return S.steps[i];
    return null;
  }

  function render() {
    viewer.draw();
    const step = currentStep();
    canvas.dataset.maskArea = step ? String(step.area) : "0";
    canvas.dataset.clicks = String(S.clicks.length);
    canvas.dataset.instances = String(S.instances.length);
    let text = "";
    if (step) text = `mask ${step.area.toLocaleString()} px · ${step.usedReference ? "with reference" : "no reference"} · ${Math.round(step.elapsedMs)} ms`;
    else if (S.clicks.length) text = "computing…";
    $("status").textContent = text;
  }

  function setBusy(delta) {
    S.busy += delta;
    $("working").hidden = S.busy === 0;
    document.body.dataset.busy = S.busy > 0 ? "1" : "0";
  }
  async function busy(promise) {
    setBusy(1);
    try { return await promise; } finally { setBusy(-1); }
  }

  // ------------------------------------------------------------------ toast
  let toastTimer = null;
  function toast(text, { error = false, action = null, html = false, ms = 4000 } = {}) {
    const box = $("toast");
    box.classList.toggle("error", error);
    if (html) $("toast-text").innerHTML = text; else $("toast-text").textContent = text;
    const button = $("toast-action");
    button.hidden = !action;
    if (action) {
      button.textContent = action.label;
      button.onclick = () => { box.hidden = true; action.run(); };
    }
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, action ? Math.max(ms, 9000) : ms);
  }
  function toastError(error) { toast(error.message || String(error), { error: true, ms: 7000 }); }

  // ------------------------------------------------------------------ progress, images
  function setProgress(progress) {
    const el = $("progress");
    el.dataset.done = progress.done; el.dataset.total = progress.total;
    el.textContent = `${progress.done} / ${progress.total} images done`;
  }

  async function refreshImages() {
    const data = await api("GET", "/api/images");
    S.images = data.images;
    setProgress(data.progress);
    const select = $("image-select");
    select.innerHTML = "";
    S.images.forEach((im, i) => {
      const option = document.createElement("option");
      option.value = String(i);
      option.textContent = `${im.done ? "✓" : "·"} ${i + 1}. ${im.path}${im.error ? " (unreadable)" : ""}`;
      select.appendChild(option);
    });
    if (S.index >= 0) select.value = String(S.index);
  }

  function clearClicks() {
    S.clicks = []; S.steps = [];
    render();
  }

  async function showImage(index) {
    if (index < 0 || index >= S.images.length) return;
    const im = S.images[index];
    S.index = index; S.imageId = im.id; S.selected = null;
    S.clicks = []; S.steps = []; S.instances = [];
    document.body.dataset.imageId = String(im.id);
    $("image-select").value = String(index);
    $("done-box").checked = im.done;
    history.replaceState(null, "", `#image=${im.id}`);
    const seq = ++S.loadSeq;
    const message = $("stage-message");
    message.hidden = true;
    document.body.dataset.imageLoaded = "0";
    try {
      api("POST", `/api/images/${im.id}/prepare`).catch(() => {}); // encode this and the next image ahead
      const [img, annotations] = await busy(Promise.all([fetchImage(im.id), api("GET", `/api/images/${im.id}/annotations`)]));
      if (seq !== S.loadSeq) return;
      viewer.setImage(img);
      S.instances = annotations.map(makeInstance);
      document.body.dataset.imageLoaded = "1";
    } catch (error) {
      if (seq !== S.loadSeq) return;
      viewer.setImage(null);
      message.textContent = `Cannot show ${im.path}: ${error.message}`;
      message.hidden = false;
      document.body.dataset.imageLoaded = "error";
    }
    renderInstances();
    render();
  }

  function makeInstance(a) {
    const m = rleToBits(a.mask);
    const colour = labelColour(a.label_id);
    return {
      id: a.id, labelId: a.label_id, area: a.area, rle: a.mask, bits: m,
      canvas: maskCanvas(m, colour, 70, 200), canvasSelected: maskCanvas(m, "#ffffff", 110, 255),
    };
  }

  function makeStep(prediction, labelId) {
    const m = rleToBits(prediction.mask);
    return {
      token: prediction.token, rle: prediction.mask, area: prediction.area, score: prediction.score,
      usedReference: prediction.used_reference, elapsedMs: prediction.elapsed_ms,
      canvas: maskCanvas(m, labelId ? labelColour(labelId) : "#38bdf8", 120, 255),
    };
  }

  // ------------------------------------------------------------------ labels and reference panel
  async function refreshLabels() {
    S.labels = await api("GET", "/api/labels");
    if (!label(S.labelId)) S.labelId = S.labels.length ? S.labels[0].id : null;
    renderLabels();
    await renderReferencePanel();
  }

  function renderLabels() {
    const list = $("label-list");
    list.innerHTML = "";
    S.labels.forEach((l, i) => {
      const li = document.createElement("li");
      li.dataset.labelId = String(l.id);
      li.classList.toggle("active", l.id === S.labelId);
      const key = document.createElement("span"); key.className = "key"; key.textContent = i < 9 ? String(i + 1) : "";
      const dot = document.createElement("span"); dot.className = "dot"; dot.style.background = l.colour;
      const name = document.createElement("span"); name.className = "name"; name.textContent = l.name; name.title = l.name;
      const count = document.createElement("span"); count.className = "count"; count.textContent = String(l.instances);
      li.append(key, dot, name);
      if (l.has_reference) {
        const thumb = document.createElement("img");
        thumb.className = "ref-thumb";
        thumb.alt = "reference";
        thumb.src = `/api/labels/${l.id}/reference/preview.png?max_side=96&v=${l.reference_id}`;
        li.append(thumb);
      } else {
        const none = document.createElement("span"); none.className = "no-ref"; none.textContent = "no ref";
        li.append(none);
      }
      const rename = document.createElement("button"); rename.className = "mini"; rename.textContent = "✎"; rename.title = "Rename";
      rename.onclick = (e) => { e.stopPropagation(); renameLabel(l); };
      const remove = document.createElement("button"); remove.className = "mini"; remove.textContent = "✕"; remove.title = "Delete label";
      remove.onclick = (e) => { e.stopPropagation(); deleteLabel(l); };
      li.append(count, rename, remove);
      li.onclick = () => selectLabel(l.id);
      list.appendChild(li);
    });
    document.body.dataset.labelId = S.labelId ? String(S.labelId) : "";
  }

  async function renderReferencePanel() {
    const l = label(S.labelId);
    const preview = $("ref-preview"), info = $("ref-info"), empty = $("ref-empty");
    $("btn-edit-ref").disabled = !l;
    $("btn-undo-ref").disabled = !l || !l.has_reference;
    if (!l || !l.has_reference) {
      preview.hidden = true; info.textContent = ""; empty.hidden = false;
      return;
    }
    empty.hidden = true;
    preview.src = `/api/labels/${l.id}/reference/preview.png?max_side=480&v=${l.reference_id}`;
    preview.hidden = false;
    try {
      const data = await api("GET", `/api/labels/${l.id}/reference`);
      const ref = data.reference;
      if (!ref) return;
      const image = S.images.find((im) => im.id === ref.image_id);
      const source = { manual: "drawn", promoted: "promoted instance", "first-accept": "first accepted instance", demo: "demo" }[ref.source] || ref.source;
      info.textContent = `${image ? image.path : "image " + ref.image_id} · ${source}` + (ref.negative ? " · with negative region" : "") +
        (data.history > 1 ? ` · ${data.history - 1} earlier` : "");
    } catch (error) { info.textContent = error.message; }
  }

  function selectLabel(id) {
    if (id === S.labelId || !label(id)) return;
    S.labelId = id;
    renderLabels();
    renderReferencePanel();
    if (S.clicks.length) { S.steps = []; runPredict(); }
    if (S.review) stopReview();
  }

  async function renameLabel(l) {
    const name = window.prompt("New name for the label", l.name);
    if (!name || name === l.name) return;
    try { await api("PATCH", `/api/labels/${l.id}`, { name }); await refreshLabels(); } catch (error) { toastError(error); }
  }

  async function deleteLabel(l) {
    let force = false;
    if (l.instances > 0) {
      if (!window.confirm(`Label "${l.name}" has ${l.instances} instances. Delete the label and hide its instances?`)) return;
      force = true;
    } else if (!window.confirm(`Delete label "${l.name}"?`)) return;
    try {
      await api("DELETE", `/api/labels/${l.id}?force=${force}`);
      await refreshLabels();
      await refreshImages();
      await showImage(S.index);
      toast(`Label "${l.name}" deleted`, { action: { label: "Undo", run: () => restoreLabel(l.id) } });
    } catch (error) { toastError(error); }
  }

  async function restoreLabel(id) {
    try {
      await api("POST", `/api/labels/${id}/restore`);
      await refreshLabels();
      await refreshImages();
      await showImage(S.index);
    } catch (error) { toastError(error); }
  }

  $("label-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("label-name");
    const name = input.value.trim();
    if (!name) return;
    try {
      const created = await api("POST", "/api/labels", { name });
      input.value = "";
      input.blur();
      S.labelId = created.id;
      await refreshLabels();
    } catch (error) { toastError(error); }
  });

  $("btn-undo-ref").onclick = () => undoReference(S.labelId);

  async function undoReference(labelId) {
    try {
      const data = await api("POST", `/api/labels/${labelId}/reference/undo`);
      await refreshLabels();
      toast(data.reference ? "Reference restored to the previous one" : "The label has no reference now");
      if (S.clicks.length && labelId === S.labelId) { S.steps = []; runPredict(); }
    } catch (error) { toastError(error); }
  }

  // ------------------------------------------------------------------ instances panel
  function renderInstances() {
    const list = $("instance-list");
    list.innerHTML = "";
    for (const inst of S.instances) {
      const l = label(inst.labelId);
      const li = document.createElement("li");
      li.dataset.annotationId = String(inst.id);
      li.classList.toggle("selected", inst.id === S.selected);
      const dot = document.createElement("span"); dot.className = "dot"; dot.style.background = l ? l.colour : "#888";
      const text = document.createElement("span"); text.className = "grow";
      text.textContent = `${l ? l.name : "?"} · ${inst.area.toLocaleString()} px`;
      const promote = document.createElement("button"); promote.textContent = "★"; promote.title = "Make this the label's reference";
      promote.onclick = (e) => { e.stopPropagation(); promoteInstance(inst); };
      const remove = document.createElement("button"); remove.textContent = "✕"; remove.title = "Delete instance";
      remove.onclick = (e) => { e.stopPropagation(); deleteInstance(inst.id); };
      li.append(dot, text, promote, remove);
      li.onclick = () => { S.selected = S.selected === inst.id ? null : inst.id; renderInstances(); render(); };
      list.appendChild(li);
    }
    if (!S.instances.length) {
      const li = document.createElement("li"); li.className = "muted small"; li.textContent = "none yet";
      list.appendChild(li);
    }
  }

  async function deleteInstance(id) {
    try {
      const data = await api("DELETE", `/api/annotations/${id}`);
      S.instances = S.instances.filter((inst) => inst.id !== id);
      if (S.selected === id) S.selected = null;
      setProgress(data.progress);
      renderInstances(); render();
      refreshLabels(); refreshImages();
      toast("Instance deleted", { action: { label: "Undo", run: () => restoreInstance(id) } });
    } catch (error) { toastError(error); }
  }

  async function restoreInstance(id) {
    try {
      const data = await api("POST", `/api/annotations/${id}/restore`);
      if (data.annotation.image_id === S.imageId) S.instances.push(makeInstance(data.annotation));
      renderInstances(); render();
      await refreshLabels(); await refreshImages();
    } catch (error) { toastError(error); }
  }

  async function promoteInstance(inst) {
    try {
      await api("POST", `/api/annotations/${inst.id}/promote`);
      await refreshLabels();
      const l = label(inst.labelId);
      toast(`This instance is now the reference of "${l ? l.name : "?"}"`, { action: { label: "Undo", run: () => undoReference(inst.labelId) } });
    } catch (error) { toastError(error); }
  }

  // ------------------------------------------------------------------ clicks and prediction
  function sameClicks(a, b) {
    return a.length === b.length && a.every((c, i) => c.x === b[i].x && c.y === b[i].y && c.positive === b[i].positive);
  }

  async function runPredict() {
    if (S.predicting) { S.predictAgain = true; return; }
    S.predicting = true;
    try {
      do {
        S.predictAgain = false;
        const n = S.clicks.length;
        if (!n || S.imageId === null) break;
        const imageId = S.imageId, labelId = S.labelId, clicks = S.clicks.slice();
        const prev = n >= 2 && S.steps[n - 2] ? S.steps[n - 2].token : null;
        let prediction;
        try {
          prediction = await busy(api("POST", "/api/predict", { image_id: imageId, label_id: labelId, clicks, prev_token: prev }));
        } catch (error) {
          toastError(error);
          break;
        }
        if (imageId !== S.imageId) break;
        if (!sameClicks(clicks, S.clicks.slice(0, n))) { S.predictAgain = S.clicks.length > 0; continue; }
        const step = makeStep(prediction, labelId);
        S.steps[n - 1] = step;
        if (S.clicks.length !== n || labelId !== S.labelId) {
          if (labelId !== S.labelId) S.steps = [];
          S.predictAgain = true;
        }
        render();
        step.shownMs = performance.now() - S.clickedAt[n - 1];
      } while (S.predictAgain);
    } finally {
      S.predicting = false;
      render();
    }
  }

  async function waitForPrediction() {
    while (S.predicting) await new Promise((r) => setTimeout(r, 30));
  }

  function addClick(p, positive) {
    S.clicks.push({ x: Math.round(p.x * 10) / 10, y: Math.round(p.y * 10) / 10, positive });
    S.clickedAt[S.clicks.length - 1] = performance.now();
    S.steps.length = Math.min(S.steps.length, S.clicks.length - 1);
    render();
    runPredict();
  }

  function undoClick() {
    if (!S.clicks.length) return;
    S.clicks.pop();
    S.steps.length = Math.min(S.steps.length, S.clicks.length);
    if (S.clicks.length && !currentStep()) runPredict();
    render();
  }

  function hitInstance(p) {
    for (let i = S.instances.length - 1; i >= 0; i--) {
      const { w, bits } = S.instances[i].bits;
      const x = Math.floor(p.x), y = Math.floor(p.y);
      if (bits[y * w + x]) return S.instances[i].id;
    }
    return null;
  }

  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("mousedown", (e) => {
    if (e.button === 1 || !viewer.img) return;
    const p = viewer.toImage(e);
    if (!viewer.inside(p)) return;
    if (e.button === 0 && (e.ctrlKey || e.metaKey)) {
      S.selected = hitInstance(p);
      renderInstances(); render();
      return;
    }
    if (e.button === 0) addClick(p, !e.shiftKey);
    else if (e.button === 2) addClick(p, false);
  });

  async function accept() {
    await waitForPrediction();
    const step = currentStep();
    if (!step) { toast("Nothing to accept: click on the target first"); return; }
    if (!S.labelId) { toast("Create a label first (left panel)", { error: true }); return; }
    if (!step.area) { toast("The mask is empty: add a positive click", { error: true }); return; }
    const labelId = S.labelId, imageId = S.imageId;
    try {
      const data = await busy(api("POST", "/api/annotations", {
        image_id: imageId, label_id: labelId, mask: { rle: step.rle }, clicks: S.clicks, score: Math.min(1, Math.max(0, step.score)),
      }));
      if (imageId !== S.imageId) return;
      S.instances.push(makeInstance(data.annotation));
      S.clicks = []; S.steps = [];
      setProgress(data.progress);
      const im = S.images[S.index];
      if (im) { im.done = true; $("done-box").checked = true; }
      renderInstances(); render();
      await refreshLabels();
      refreshImages();
      if (data.reference_set) {
        const l = label(labelId);
        toast(`Saved. It is also the reference of "${l ? l.name : "?"}" now (first instance of the label)`, {
          action: { label: "Undo reference", run: () => undoReference(labelId) },
        });
      } else {
        toast("Saved");
      }
      document.body.dataset.lastSaved = String(data.annotation.id);
      if (S.review) reviewNext();
    } catch (error) { toastError(error); }
  }

  // ------------------------------------------------------------------ propose and review
  async function propose() {
    if (!S.labelId || S.imageId === null) { toast("Pick a label first", { error: true }); return false; }
    if (S.project && !S.project.can_propose) { toast("This model cannot propose points", { error: true }); return false; }
    const imageId = S.imageId, labelId = S.labelId;
    await waitForPrediction();
    try {
      const data = await busy(api("POST", "/api/propose", { image_id: imageId, label_id: labelId }));
      if (imageId !== S.imageId) return false;
      if (!data.point) { toast(data.reason || "No proposal", { error: true }); return false; }
      S.clicks = [data.point];
      S.steps = [makeStep(data.prediction, labelId)];
      render();
      return true;
    } catch (error) { toastError(error); return false; }
  }

  function renderReviewBadge() {
    const badge = $("review-state");
    if (!S.review) { badge.hidden = true; $("btn-review").textContent = "Review queue"; return; }
    badge.hidden = false;
    badge.textContent = `Review ${Math.min(S.review.pos + 1, S.review.queue.length)} / ${S.review.queue.length}: Enter accept · clicks correct · x reject · Esc stop`;
    $("btn-review").textContent = "Stop review";
  }

  async function startReview() {
    if (S.review) { stopReview(); return; }
    if (!S.labelId) { toast("Pick a label first", { error: true }); return; }
    const l = label(S.labelId);
    if (!l.has_reference) { toast("This label has no reference yet: set one or accept a first instance", { error: true }); return; }
    try {
      const data = await api("GET", `/api/queue?label_id=${S.labelId}`);
      if (!data.image_ids.length) { toast(`Every image already has a "${l.name}" instance`); return; }
      S.review = { queue: data.image_ids, pos: 0 };
      await reviewShow();
    } catch (error) { toastError(error); }
  }

  async function reviewShow() {
    const r = S.review;
    if (!r) return;
    if (r.pos >= r.queue.length) { stopReview(); toast("Review finished"); return; }
    const index = S.images.findIndex((im) => im.id === r.queue[r.pos]);
    renderReviewBadge();
    await showImage(index);
    if (S.review === r) await propose();
  }

  function reviewNext() { if (!S.review) return; S.review.pos += 1; reviewShow(); }
  function stopReview() { S.review = null; renderReviewBadge(); }

  $("btn-propose").onclick = () => propose();
  $("btn-review").onclick = () => startReview();

  // ------------------------------------------------------------------ navigation, done, export, help
  function go(delta) {
    if (!S.images.length) return;
    const index = Math.min(S.images.length - 1, Math.max(0, S.index + delta));
    if (index !== S.index) showImage(index);
  }
  $("btn-prev").onclick = () => go(-1);
  $("btn-next").onclick = () => go(1);
  $("image-select").onchange = (e) => { showImage(Number(e.target.value)); e.target.blur(); };
  $("done-box").onchange = async (e) => {
    try {
      const progress = await api("PUT", `/api/images/${S.imageId}/done`, { done: e.target.checked });
      setProgress(progress);
      S.images[S.index].done = e.target.checked;
      refreshImages();
    } catch (error) { toastError(error); }
  };

  $("btn-export").onclick = async () => {
    const format = $("export-format").value;
    try {
      const data = await busy(api("POST", "/api/export", { format }));
      document.body.dataset.lastExport = data.path;
      const warn = data.warnings.length ? ` (${data.skipped} skipped)` : "";
      const safePath = data.out_dir.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
      toast(`Exported ${data.instances} instances on ${data.images} images${warn} to ${safePath} · <a href="${data.download}">download zip</a>`,
        { html: true, ms: 12000 });
    } catch (error) { toastError(error); }
  };

  function toggleHelp(show) { $("help").hidden = show === undefined ? !$("help").hidden : !show; }
  $("btn-help").onclick = () => toggleHelp(true);
  $("help-close").onclick = () => toggleHelp(false);
  $("help").addEventListener("mousedown", (e) => { if (e.target === $("help")) toggleHelp(false); });

  // ------------------------------------------------------------------ keyboard
  document.addEventListener("keydown", (e) => {
    const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName) && e.target.type !== "checkbox" && e.target.type !== "radio";
    if (!$("ref-editor").hidden) { editorKey(e, typing); return; }
    if (!$("help").hidden) {
      if (e.key === "Escape" || e.key === "?") { toggleHelp(false); e.preventDefault(); }
      return;
    }
    if (typing) { if (e.key === "Escape") e.target.blur(); return; }
    const key = e.key;
    if ((e.ctrlKey || e.metaKey) && key.toLowerCase() === "z") { e.preventDefault(); undoClick(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (key === "?") { toggleHelp(true); e.preventDefault(); }
    else if (key === "Escape") {
      if (S.clicks.length) clearClicks();
      else if (S.review) stopReview();
      else if (S.selected !== null) { S.selected = null; renderInstances(); render(); }
    } else if (key === "Enter" || key === "f") { e.preventDefault(); accept(); }
    else if (key === "a") go(-1);
    else if (key === "d") go(1);
    else if (key === "p") propose();
    else if (key === "r") startReview();
    else if (key === "x" && S.review) reviewNext();
    else if (key === "0") viewer.fit();
    else if (key === "Delete" || key === "Backspace") { if (S.selected !== null) { e.preventDefault(); deleteInstance(S.selected); } }
    else if (/^[1-9]$/.test(key)) { const l = S.labels[Number(key) - 1]; if (l) selectLabel(l.id); }
  });

  // ------------------------------------------------------------------ reference editor
  const E = {
    labelId: null, imageId: null, img: null, pos: null, neg: null, layer: "pos", tool: "click",
    clicks: [], tokens: [], painting: false, last: null, cursor: null, predicting: false,
  };
  const edCanvas = $("ed-canvas");
  const edViewer = new Viewer(edCanvas, drawEditor);
  window.refcutEditorViewer = edViewer;
  const LAYER_COLOUR = { pos: "#28dc3c", neg: "#eb2828" };

  function drawEditor(ctx, v) {
    ctx.globalAlpha = 0.45;
    if (E.pos) ctx.drawImage(E.pos, 0, 0);
    if (E.neg) ctx.drawImage(E.neg, 0, 0);
    ctx.globalAlpha = 1;
    if (E.tool === "click") drawClicks(ctx, v, E.clicks);
    if (E.tool !== "click" && E.cursor) {
      ctx.beginPath();
      ctx.arc(E.cursor.x, E.cursor.y, brushRadius(), 0, 2 * Math.PI);
      ctx.strokeStyle = "#ffffff"; ctx.lineWidth = v.screen(1);
      ctx.stroke();
    }
  }

  function brushRadius() { return edViewer.screen(Number($("ed-size").value) / 2); }
  function layerCanvas(w, h) { const c = document.createElement("canvas"); c.width = w; c.height = h; return c; }

  function paintBits(target, m, colour) {
    const ctx = target.getContext("2d");
    ctx.clearRect(0, 0, target.width, target.height);
    ctx.drawImage(maskCanvas(m, colour, 255, 255), 0, 0);
  }

  function layerArea(layer) {
    if (!layer) return 0;
    const d = layer.getContext("2d").getImageData(0, 0, layer.width, layer.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 127) n++;
    return n;
  }

  function updateEditorStats() {
    edCanvas.dataset.posArea = String(layerArea(E.pos));
    edCanvas.dataset.negArea = String(layerArea(E.neg));
  }

  async function openEditor() {
    const l = label(S.labelId);
    if (!l) { toast("Create a label first", { error: true }); return; }
    E.labelId = l.id;
    $("ed-label").textContent = l.name;
    const select = $("ed-image");
    select.innerHTML = "";
    S.images.forEach((im) => {
      if (im.error) return;
      const option = document.createElement("option");
      option.value = String(im.id); option.textContent = im.path;
      select.appendChild(option);
    });
    let reference = null;
    try { reference = (await api("GET", `/api/labels/${l.id}/reference`)).reference; } catch (_) { /* none */ }
    // Start on the current reference (to refine it); the image menu picks another one.
    const current = S.imageId !== null && !(S.images[S.index] || {}).error ? S.imageId : null;
    const imageId = reference ? reference.image_id : current;
    $("ref-editor").hidden = false;
    edViewer.resize();
    await editorLoadImage(imageId ?? Number(select.value), reference);
  }

  async function editorLoadImage(imageId, reference) {
    $("ed-image").value = String(imageId);
    delete edCanvas.dataset.loaded;  // set again once the image and its layers are ready (browser tests wait for it)
    E.imageId = imageId; E.clicks = []; E.tokens = [];
    try {
      E.img = await busy(fetchImage(imageId));
    } catch (error) { toastError(error); return; }
    E.pos = layerCanvas(E.img.width, E.img.height);
    E.neg = layerCanvas(E.img.width, E.img.height);
    if (reference && reference.image_id === imageId) {
      paintBits(E.pos, rleToBits(reference.positive), LAYER_COLOUR.pos);
      if (reference.negative) paintBits(E.neg, rleToBits(reference.negative), LAYER_COLOUR.neg);
    }
    edViewer.setImage(E.img);
    updateEditorStats();
    edCanvas.dataset.loaded = "1";
  }

  function closeEditor() {
    $("ref-editor").hidden = true; E.img = null; E.pos = E.neg = null;
    delete edCanvas.dataset.loaded;
  }

  async function editorPredict() {
    if (E.predicting) return;
    E.predicting = true;
    $("ed-working").hidden = false;
    try {
      while (true) {
        const clicks = E.clicks.slice(), layer = E.layer, imageId = E.imageId;
        if (!clicks.length) {
          const target = layer === "pos" ? E.pos : E.neg;
          if (target) target.getContext("2d").clearRect(0, 0, target.width, target.height);
          break;
        }
        const prev = clicks.length >= 2 ? E.tokens[clicks.length - 2] || null : null;
        const prediction = await busy(api("POST", "/api/predict", { image_id: imageId, label_id: null, clicks, prev_token: prev, use_reference: false }));
        if (imageId !== E.imageId || $("ref-editor").hidden || layer !== E.layer) break;
        E.tokens[clicks.length - 1] = prediction.token;
        paintBits(layer === "pos" ? E.pos : E.neg, rleToBits(prediction.mask), LAYER_COLOUR[layer]);
        if (sameClicks(clicks, E.clicks)) break;
      }
    } catch (error) { toastError(error); }
    finally {
      E.predicting = false;
      $("ed-working").hidden = true;
      edViewer.draw();
      updateEditorStats();
    }
  }

  function activeLayer() { return E.layer === "pos" ? E.pos : E.neg; }

  function paintTo(p) {
    const ctx = activeLayer().getContext("2d");
    ctx.save();
    ctx.globalCompositeOperation = E.tool === "eraser" ? "destination-out" : "source-over";
    ctx.strokeStyle = ctx.fillStyle = LAYER_COLOUR[E.layer];
    ctx.lineWidth = brushRadius() * 2; ctx.lineCap = "round";
    ctx.beginPath();
    if (E.last) { ctx.moveTo(E.last.x, E.last.y); ctx.lineTo(p.x, p.y); ctx.stroke(); }
    else { ctx.arc(p.x, p.y, brushRadius(), 0, 2 * Math.PI); ctx.fill(); }
    ctx.restore();
    E.last = p;
    edViewer.draw();
  }

  edCanvas.addEventListener("contextmenu", (e) => e.preventDefault());
  edCanvas.addEventListener("mousedown", (e) => {
    if (e.button === 1 || !E.img) return;
    const p = edViewer.toImage(e);
    if (E.tool === "click") {
      if (!edViewer.inside(p)) return;
      E.clicks.push({ x: Math.round(p.x * 10) / 10, y: Math.round(p.y * 10) / 10, positive: e.button === 0 && !e.shiftKey });
      edViewer.draw();
      editorPredict();
    } else if (e.button === 0) {
      E.painting = true; E.last = null;
      paintTo(p);
    }
  });
  edCanvas.addEventListener("mousemove", (e) => {
    if (!E.img) return;
    const p = edViewer.toImage(e);
    E.cursor = p;
    if (E.painting) paintTo(p); else if (E.tool !== "click") edViewer.draw();
  });
  window.addEventListener("mouseup", () => {
    if (E.painting) { E.painting = false; E.last = null; updateEditorStats(); }
  });
  edCanvas.addEventListener("mouseleave", () => { E.cursor = null; edViewer.draw(); });

  document.querySelectorAll('input[name="ed-layer"]').forEach((radio) => radio.addEventListener("change", (e) => {
    E.layer = e.target.value; E.clicks = []; E.tokens = []; edViewer.draw();
  }));
  document.querySelectorAll('input[name="ed-tool"]').forEach((radio) => radio.addEventListener("change", (e) => {
    E.tool = e.target.value; E.clicks = []; E.tokens = []; edViewer.draw();
  }));
  $("ed-image").onchange = (e) => { editorLoadImage(Number(e.target.value), null); e.target.blur(); };
  $("ed-clear").onclick = () => {
    const layer = activeLayer();
    if (layer) layer.getContext("2d").clearRect(0, 0, layer.width, layer.height);
    E.clicks = []; E.tokens = [];
    edViewer.draw(); updateEditorStats();
  };
  $("ed-cancel").onclick = closeEditor;
  $("ed-save").onclick = saveReference;
  $("btn-edit-ref").onclick = openEditor;

  async function saveReference() {
    if (!E.img) return;
    if (layerArea(E.pos) === 0) { toast("Mark the target (positive layer) first", { error: true }); return; }
    const body = { image_id: E.imageId, positive: { png: E.pos.toDataURL("image/png") } };
    if (layerArea(E.neg) > 0) body.negative = { png: E.neg.toDataURL("image/png") };
    try {
      await busy(api("PUT", `/api/labels/${E.labelId}/reference`, body));
      const labelId = E.labelId;
      closeEditor();
      await refreshLabels();
      toast("Reference saved", { action: { label: "Undo", run: () => undoReference(labelId) } });
      if (S.clicks.length && labelId === S.labelId) { S.steps = []; runPredict(); }
    } catch (error) { toastError(error); }
  }

  function editorKey(e, typing) {
    if (e.key === "Escape") { e.preventDefault(); closeEditor(); return; }
    if (typing) return;
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z" && E.tool === "click") {
      e.preventDefault();
      E.clicks.pop(); E.tokens.length = Math.min(E.tokens.length, E.clicks.length);
      editorPredict();
    } else if (e.key === "0") edViewer.fit();
  }

  // ------------------------------------------------------------------ start
  async function init() {
    try {
      S.project = await api("GET", "/api/project");
      $("project-name").textContent = S.project.name;
      document.title = `RefCut · ${S.project.name}`;
      $("btn-propose").disabled = !S.project.can_propose;
      $("btn-review").disabled = !S.project.can_propose;
      await refreshImages();
      await refreshLabels();
      const match = /image=(\d+)/.exec(location.hash);
      let index = match ? S.images.findIndex((im) => im.id === Number(match[1])) : -1;
      if (index < 0) index = Math.max(0, S.images.findIndex((im) => !im.done));
      if (S.images.length) await showImage(index);
      else { $("stage-message").textContent = "No images in the project's image folder."; $("stage-message").hidden = false; }
      if (!S.project.model_loaded) toast("No model loaded: clicks will not work", { error: true });
      document.body.dataset.ready = "1";
    } catch (error) { toastError(error); }
  }
  init();
})();
