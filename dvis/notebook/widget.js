// The notebook widget's half of the client: dvis/web/static/app.js (prepended to this file by
// dvis/notebook/widget.py with MARKUP, the page's elements, so both are in scope) over the widget's
// comm channel instead of a WebSocket. Messages are the page's: {text: JSON} for text, buffers[0] for binary (frames, camera).

function commTransport(model) {
  let on = null;
  const uploads = [];  // resolvers of the uploads sent, answered in order
  const handler = (content, buffers) => {
    if (content.upload) { const done = uploads.shift(); if (done) done(content.upload); return; }
    if (content.text !== undefined) on.message(content.text);
    else if (buffers && buffers.length) {
      const b = buffers[0];  // a DataView on the message's buffer
      on.message(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    }
  };
  return {
    connect(callbacks) {
      on = callbacks;
      model.on("msg:custom", handler);
      callbacks.open();
      // A new view (or one re-rendered after a reload) starts from the whole canvas.
      model.send({text: JSON.stringify({t: "full"})});
      model.send({text: JSON.stringify({t: "ack"})});
    },
    open: () => on !== null,
    send(data) {
      if (typeof data === "string") model.send({text: data});
      else model.send({bin: 1}, undefined, [data]);
    },
    busy: () => false,
    async upload(file) {
      const buf = await file.arrayBuffer();
      return new Promise((resolve) => { uploads.push(resolve); model.send({upload: file.name}, undefined, [buf]); });
    },
    close() { model.off("msg:custom", handler); on = null; },
  };
}

export default {
  render({model, el}) {
    // Keys pressed in the toolbox are its own, not the notebook's shortcuts (Lumino honours this).
    el.setAttribute("data-lm-suppress-shortcuts", "true");
    el.setAttribute("data-p-suppress-shortcuts", "true");
    const stats = startClient(el, commTransport(model), {markup: MARKUP});
    return () => stats.close();
  },
};
