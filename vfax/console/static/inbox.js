// The inbox: a fax that finishes while the page is open is added (or its row updated) from
// /v1/faxes/{id} when /v1/events reports it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const body = document.getElementById("faxes").tBodies[0];
  const rowOf = (id) => Array.from(body.rows).find((row) => row.dataset.fax === id);

  function build(fax) {
    const links = vfax.el("td", { class: "downloads" });
    const file = (kind, label) => vfax.el("a", { href: `/v1/faxes/${encodeURIComponent(fax.id)}/${kind}`, download: "", text: label });
    if (fax.has_pdf) links.append(file("pdf", "PDF"), " ");
    if (fax.has_tiff) links.append(file("tiff", "TIFF"), " ");
    if (fax.error) links.append(vfax.el("span", { class: "error-text", text: fax.error }));
    return vfax.el("tr", { dataset: { fax: fax.id } },
      vfax.el("td", { dataset: { field: "started_at" }, text: vfax.when(fax.started_at) }),
      vfax.el("td", { dataset: { field: "state" } }, vfax.badge(fax.state)),
      vfax.el("td", { dataset: { field: "caller" }, class: "caller", text: fax.caller }),
      vfax.el("td", { dataset: { field: "remote_csi" }, class: "csi", text: fax.remote_csi }),
      vfax.el("td", { dataset: { field: "device" }, text: fax.device }),
      vfax.el("td", { dataset: { field: "pages" }, text: fax.pages }),
      links);
  }

  const waiting = new Set();
  const update = vfax.serial(async () => {
    for (const id of Array.from(waiting)) {
      waiting.delete(id);
      let fax;
      try { fax = await vfax.api(`/v1/faxes/${encodeURIComponent(id)}`); } catch (error) {
        if (error.status === 404) continue; // an outbound job's event
        throw error;
      }
      const row = build(fax);
      const old = rowOf(id);
      if (old) old.replaceWith(row); else body.append(row);
      document.getElementById("no-faxes")?.remove();
    }
  });

  vfax.events((event) => { if (event.type === "terminal" || rowOf(event.job_id)) { waiting.add(event.job_id); update(); } });
});
