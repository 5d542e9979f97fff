// The send form: a chosen (or dropped) document is converted by POST /v1/previews and its pages shown as
// they will be faxed; "Send" queues exactly those pages with POST /v1/jobs (preview_id) and opens the job.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("send-form");
  const input = document.getElementById("document");
  const drop = document.getElementById("drop");
  const resolution = document.getElementById("resolution");
  const state = document.getElementById("preview-state");
  const list = document.getElementById("previews");
  const send = document.getElementById("send");
  const result = document.getElementById("send-result");
  let preview = null;
  let file = null;

  async function forget() {
    if (!preview) return;
    const old = preview;
    preview = null;
    try { await vfax.api(`/v1/previews/${encodeURIComponent(old.id)}`, { method: "DELETE" }); } catch (_) { /* expires */ }
  }

  const make = vfax.serial(async () => {
    send.disabled = true;
    list.replaceChildren();
    vfax.setText(result, "");
    await forget();
    if (!file) { vfax.setText(state, "Choose a document to see its pages."); return; }
    vfax.setText(state, `Converting ${file.name}…`);
    const body = new FormData();
    body.append("document", file, file.name);
    body.append("resolution", resolution.value);
    try {
      preview = await vfax.api("/v1/previews", { method: "POST", body });
    } catch (error) {
      vfax.setText(state, "No pages.");
      vfax.setText(result, `Refused: ${error.message}`);
      return;
    }
    const base = `/v1/previews/${encodeURIComponent(preview.id)}/pages`;
    list.replaceChildren(...preview.pages.map((p) => vfax.el("li", {},
      vfax.el("img", { src: `${base}/${p.number}.png?width=160`, alt: `Page ${p.number} of ${preview.count}` }),
      vfax.el("span", { text: `Page ${p.number}` }))));
    vfax.setText(state, `${preview.count} page${preview.count === 1 ? "" : "s"}, ${preview.resolution} resolution.`);
    send.disabled = false;
  });

  input.addEventListener("change", () => { file = input.files[0] || null; make(); });
  resolution.addEventListener("change", () => { if (file) make(); });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) { file = event.dataTransfer.files[0]; make(); }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!preview) { vfax.setText(result, "Choose a document first."); return; }
    const body = new FormData();
    body.append("preview_id", preview.id);
    body.append("to", document.getElementById("to").value.trim());
    for (const name of ["device", "ecm", "t38", "not_before"]) {
      const value = document.getElementById(name).value.trim();
      if (value) body.append(name, value);
    }
    send.disabled = true;
    vfax.setText(result, "Queueing…");
    try {
      const job = await vfax.api("/v1/jobs", { method: "POST", body });
      window.location.assign(`/outbound/${encodeURIComponent(job.id)}`);
    } catch (error) {
      vfax.setText(result, `Not queued: ${error.message}`);
      send.disabled = false;
    }
  });
});
