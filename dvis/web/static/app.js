// The dvis toolbox client: draws the server's frames on a canvas, sends keys, clicks, uploads and
// camera frames. One client for the `dvis serve` page (socketTransport: a WebSocket and POST
// /upload) and the notebook widget (dvis/notebook/widget.js: the widget's comm channel); the
// protocol is the same over both (dvis/web/protocol.py). No build step, no external scripts.

const SPECIAL = {ArrowLeft: "left", ArrowRight: "right", ArrowUp: "up", ArrowDown: "down",
  PageUp: "pageup", PageDown: "pagedown", Home: "home", End: "end", Escape: "esc", Enter: "enter",
  Tab: "tab", Backspace: "backspace", Delete: "delete", " ": "space"};

// The page's transport: one WebSocket to /ws (reconnecting with backoff), uploads by POST /upload.
// A transport has connect({open, message, close}), send(text or bytes), open(), busy(), upload(file)
// (a promise of {name} or {error}) and close().
export function socketTransport() {
  let ws = null, backoff = 500, closed = false;
  const t = {
    connect(on) {
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      ws = new WebSocket(proto + "//" + location.host + "/ws");
      ws.binaryType = "arraybuffer";
      ws.onopen = () => { backoff = 500; on.open(); };
      ws.onmessage = (ev) => on.message(ev.data);
      ws.onclose = (ev) => {
        const why = ev.code === 1008 ? " (refused: open the URL with the token that dvis serve printed)" : "";
        on.close("disconnected" + why + ", retrying");
        if (closed) return;
        setTimeout(() => t.connect(on), backoff);
        backoff = Math.min(backoff * 2, 5000);
      };
    },
    open: () => ws !== null && ws.readyState === WebSocket.OPEN,
    send: (data) => ws.send(data),
    busy: () => ws.bufferedAmount > 0,
    async upload(file) {
      const res = await fetch("/upload", {method: "POST", body: file,
        headers: {"X-Filename": file.name.replace(/[^\x20-\x7e]/g, "_")}});
      const body = await res.json().catch(() => ({error: res.statusText}));
      return res.ok ? body : {error: body.error};
    },
    drop: () => ws && ws.close(),  // tests: simulate a network drop
    close() { closed = true; if (ws) ws.close(); },
  };
  return t;
}

// Run the toolbox in ``root`` over ``transport``. ``root`` holds the toolbox's elements (index.html's
// marked part), or ``options.markup`` is that part, added here (the widget: dvis/notebook/widget.py
// copies it from index.html). ``options.page``: the toolbox is the whole page (the canvas fits the
// window, keys and drops count anywhere on it), else it lives in ``root`` (a notebook cell: the
// canvas fits its width, keys count while it has the focus).
// Returns the stats object (frames, latencies, errors: for tests and the benchmarks) with a close().
export function startClient(root, transport, options = {}) {
  root.classList.add("dvis");
  if (options.markup) root.insertAdjacentHTML("beforeend", options.markup);
  const $ = (cls) => root.querySelector(".dvis-" + cls);
  const canvas = $("view"), ctx = canvas.getContext("2d");
  const conn = $("conn"), note = $("note"), video = $("cam");
  // frames, the last header, key-to-frame latencies (ms). latencies: input to the first frame showing
  // it; results: input to the first settled frame after it (the network pass for it done); unchanged:
  // inputs that changed nothing, to the server's answer; atlasPieces: rectangles drawn from an image
  // that holds several.
  const stats = {frames: 0, header: null, seq: 0, ackedSeq: 0, latencies: [], unchanged: [],
    results: [], sent: new Map(), unsettled: new Map(), bytes: 0, connected: false, connections: 0, settledFrames: 0, errors: [], atlasPieces: 0};
  let camTimer = null, camStream = null, alive = true;
  const cleanups = [];
  function listen(target, type, fn) { target.addEventListener(type, fn); cleanups.push(() => target.removeEventListener(type, fn)); }

  function say(text, error) {
    note.textContent = text;
    note.className = "dvis-note" + (error ? " error" : "");
    if (error) stats.errors.push(text);
  }

  function fit() {
    // Integer scale when the canvas fits at 1:1 or more (crisp pixels), else shrink to fit.
    const dpr = window.devicePixelRatio || 1;
    const availW = (options.page ? window.innerWidth : root.clientWidth) * dpr;
    const availH = options.page ? (window.innerHeight - 24) * dpr : Infinity;
    let s = Math.min(availW / canvas.width, availH / canvas.height);
    if (!(s > 0)) return;  // not laid out yet
    if (s >= 1) s = Math.floor(s);
    canvas.style.width = (canvas.width * s / dpr) + "px";
    canvas.style.height = (canvas.height * s / dpr) + "px";
    canvas.classList.toggle("crisp", s >= 1);
  }
  if (options.page) listen(window, "resize", fit);
  else if (window.ResizeObserver) {
    const ro = new ResizeObserver(fit);
    ro.observe(root);
    cleanups.push(() => ro.disconnect());
  }

  function send(obj) {
    if (transport.open()) { transport.send(JSON.stringify(obj)); return true; }
    return false;
  }

  function input(obj) {
    obj.seq = ++stats.seq;
    stats.sent.set(obj.seq, performance.now());
    stats.unsettled.set(obj.seq, performance.now());
    if (!send(obj)) say("not connected: input dropped", true);
  }

  function record(map, seq, table) {
    const now = performance.now();
    for (const [s, t] of map) {
      if (s <= seq) { table.push(now - t); map.delete(s); }
    }
  }

  function settle(seq, table) {
    // Every input up to seq is now shown: record how long each took.
    record(stats.sent, seq, table);
    stats.ackedSeq = Math.max(stats.ackedSeq, seq);
  }

  function rgba(rgb, w, h) {
    const img = new ImageData(w, h), out = img.data;
    for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
      out[j] = rgb[i]; out[j + 1] = rgb[i + 1]; out[j + 2] = rgb[i + 2]; out[j + 3] = 255;
    }
    return img;
  }

  async function onBinary(buf) {
    const view = new DataView(buf);
    const kind = String.fromCharCode(view.getUint8(0));
    const len = view.getUint32(1);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 5, len)));
    if (kind === "S") {
      const blob = new Blob([new Uint8Array(buf, 5 + len)], {type: header.mime});
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = header.name;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
      say("screenshot " + header.name);
      return;
    }
    try {
      // Only the rectangles that changed since the last frame sent here (the whole canvas at first):
      // images decoded off the main thread (one may be an atlas of several rectangles), small ones
      // raw RGB (no decode at all).
      const data = new Uint8Array(buf, 5 + len);
      let offset = 0, image = null;
      const parts = header.rects.map(([x, y, w, h, n, raw, sx, sy]) => {
        const start = offset;
        offset += n;
        if (raw) return [x, y, w, h, 0, 0, rgba(data.subarray(start, start + n), w, h)];
        // Default options: the frames carry no colour profile (sRGB in, sRGB canvas) and no alpha, so
        // "none" conversions change no pixel; they only cost a slower decode path (~1 ms a frame).
        if (n) image = createImageBitmap(new Blob([data.subarray(start, start + n)], {type: header.mime}));
        else stats.atlasPieces += 1;
        return image.then((bmp) => [x, y, w, h, sx, sy, bmp]);
      });
      const pieces = await Promise.all(parts);
      if (canvas.width !== header.w || canvas.height !== header.h) {
        canvas.width = header.w; canvas.height = header.h; fit();
      }
      ctx.imageSmoothingEnabled = false;  // pieces are copied 1:1; never filtered
      const bitmaps = new Set();
      for (const [x, y, w, h, sx, sy, img] of pieces) {
        if (img instanceof ImageData) ctx.putImageData(img, x, y);
        else { ctx.drawImage(img, sx, sy, w, h, x, y, w, h); bitmaps.add(img); }
      }
      bitmaps.forEach((bmp) => bmp.close());
      stats.frames += 1;
      frameTimes.push(performance.now());
      stats.bytes += buf.byteLength;
      stats.header = header;
      settle(header.seq, stats.latencies);
      if (header.settled) { stats.settledFrames += 1; record(stats.unsettled, header.seq, stats.results); }
    } catch (e) {
      say("bad frame: " + e, true);
      send({t: "full"});  // what is shown is no longer what the server thinks: ask for a whole frame
    }
    send({t: "ack"});
  }

  // Messages are handled in the order they came: each frame is a delta on the last one drawn.
  let drawing = Promise.resolve();
  function queue(data) {
    drawing = drawing.then(() => (typeof data === "string" ? onText(data) : onBinary(data)))
      .catch((e) => say("page error: " + e, true));  // one bad message must not stop the ones after it
  }

  function onText(text) {
    let msg;
    try { msg = JSON.parse(text); } catch (e) { return; }
    if (msg.type === "seq") {
      settle(msg.seq, stats.unchanged);
      if (stats.header) {  // the canvas shown now reflects these inputs too
        stats.header.settled = msg.settled;
        stats.header.seq = Math.max(stats.header.seq, msg.seq);
      }
      if (msg.settled) record(stats.unsettled, msg.seq, stats.results);
    }
    else if (msg.type === "error") say(msg.text, true);
    else if (msg.type === "info") say(msg.text);
    else if (msg.type === "camera") msg.on ? startCamera(msg) : stopCamera();
  }

  // The page's own frame rate next to the connection state: frames come only when something changes,
  // so it is the rate of the last second's frames, and nothing while none came.
  const frameTimes = [];
  const rateTimer = setInterval(() => {
    const now = performance.now();
    while (frameTimes.length && frameTimes[0] < now - 1000) frameTimes.shift();
    if (stats.connected) conn.textContent = "connected" + (frameTimes.length ? ", " + frameTimes.length + " frames/s" : "");
  }, 1000);
  cleanups.push(() => clearInterval(rateTimer));

  conn.textContent = "connecting"; conn.className = "dvis-conn";
  transport.connect({
    open() {
      stats.connected = true; stats.connections += 1;
      conn.textContent = "connected"; conn.className = "dvis-conn ok";
      if (options.page) canvas.focus();
    },
    message: (data) => { if (alive) queue(data); },
    close(text) {
      stats.connected = false;
      stopCamera();
      conn.textContent = text; conn.className = "dvis-conn bad";
    },
  });

  // Keys while the toolbox has focus (the page: anywhere on it). In a notebook they must not reach
  // the notebook's own shortcuts (a, b, j, k, ...): stopped here, and the root is marked for Lumino.
  listen(options.page ? document : root, "keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.target.tagName === "INPUT") return;
    const name = SPECIAL[e.key] || (e.key.length === 1 && e.key > " " && e.key <= "~" ? e.key : null);
    if (!name) return;
    e.preventDefault();
    e.stopPropagation();
    input({t: "key", key: name});
  });

  listen(canvas, "mousedown", (e) => {
    const r = canvas.getBoundingClientRect();
    const x = Math.floor((e.clientX - r.left) * canvas.width / r.width);
    const y = Math.floor((e.clientY - r.top) * canvas.height / r.height);
    input({t: "click", x: x, y: y});
    canvas.focus();
    e.preventDefault();  // keep the focus on the canvas (a notebook would take it for the cell)
  });

  async function upload(file) {
    say("uploading " + file.name);
    try {
      const body = await transport.upload(file);
      if (body.error) say("upload: " + body.error, true); else say("showing " + body.name);
    } catch (e) { say("upload failed: " + e, true); }
  }
  listen($("file"), "change", (e) => {
    if (e.target.files.length) upload(e.target.files[0]);
    e.target.value = "";
    canvas.focus();
  });
  listen($("shot"), "click", () => { input({t: "key", key: "p"}); canvas.focus(); });
  const dropTarget = options.page ? window : root;
  listen(dropTarget, "dragover", (e) => { e.preventDefault(); root.classList.add("dragging"); });
  listen(dropTarget, "dragleave", () => root.classList.remove("dragging"));
  listen(dropTarget, "drop", (e) => {
    e.preventDefault(); e.stopPropagation(); root.classList.remove("dragging");
    if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
  });

  async function startCamera(msg) {
    stopCamera();
    try {
      camStream = await navigator.mediaDevices.getUserMedia({video: true, audio: false});
    } catch (e) {
      send({t: "camera_error", text: String(e.name || e)});
      say("camera: " + (e.name || e), true);
      return;
    }
    video.srcObject = camStream;
    await video.play().catch(() => {});
    // Frames go to the server at the model's input size (cropped to its aspect), so the upload is small.
    const [h, w] = msg.size;
    const scale = Math.max(1, Math.ceil(224 / Math.max(h, w)));
    const grab = document.createElement("canvas");
    grab.width = w * scale; grab.height = h * scale;
    const g = grab.getContext("2d");
    camTimer = setInterval(() => {
      if (!video.videoWidth || !transport.open() || transport.busy()) return;
      const vw = video.videoWidth, vh = video.videoHeight;
      const aspect = grab.width / grab.height;
      const cw = Math.min(vw, vh * aspect), ch = cw / aspect;
      g.save();
      if (msg.mirror) { g.translate(grab.width, 0); g.scale(-1, 1); }
      g.drawImage(video, (vw - cw) / 2, (vh - ch) / 2, cw, ch, 0, 0, grab.width, grab.height);
      g.restore();
      grab.toBlob((b) => {
        if (!b || !transport.open()) return;
        b.arrayBuffer().then((a) => {
          const out = new Uint8Array(a.byteLength + 1);
          out[0] = 67; // "C"
          out.set(new Uint8Array(a), 1);
          transport.send(out);
        });
      }, "image/jpeg", 0.85);
    }, 66);
    say("camera on");
  }

  function stopCamera() {
    if (camTimer) { clearInterval(camTimer); camTimer = null; }
    if (camStream) { camStream.getTracks().forEach((t) => t.stop()); camStream = null; }
  }

  stats.drop = () => transport.drop && transport.drop();
  stats.close = () => {  // the widget's view went away: stop everything this client started
    alive = false;
    stopCamera();
    cleanups.forEach((fn) => fn());
    transport.close();
  };
  root.dvis = stats;
  return stats;
}
