// The inbox: a fax that finishes while the page is open is added (or its row updated) from
// /v1/faxes/{id} when /v1/events reports it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const body = document.getElementById("faxes").tBodies[0];
  const searching = document.getElementById("faxes").dataset.searching === "yes";
  const rowOf = (id) => Array.from(body.rows).find((row) => row.dataset.fax === id);

  function build(fax) {
    const links = vfax.el("td", { class: "downloads" });
    const file = (kind, label) => vfax.el("a", { href: `/v1/faxes/${encodeURIComponent(fax.id)}/${kind}`, download: "", text: label });
    if (fax.has_pdf) links.append(file("pdf", "PDF"), " ");
    if (fax.has_tiff) links.append(file("tiff", "TIFF"), " ");
    if (fax.error) links.append(vfax.el("span", { class: "error-text", text: fax.error }));
    if (fax.has_report) links.append(vfax.el("a", { href: `/inbox/${encodeURIComponent(fax.id)}/report`, text: "Call report" }), " ");
    const received = vfax.el("td", { dataset: { field: "started_at" } },
      vfax.el("a", { class: "open", href: `/inbox/${encodeURIComponent(fax.id)}`, text: vfax.when(fax.started_at) }));
    if (!fax.read) received.append(" ", vfax.el("span", { class: "new", text: "unread" }));
    return vfax.el("tr", { dataset: { fax: fax.id, read: fax.read ? "yes" : "no" }, ...(fax.read ? {} : { class: "unread" }) },
      received,
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
      if (old) old.replaceWith(row);
      else if (!searching) body.append(row); // a search result list is not extended: search again
      else continue;
      document.getElementById("no-faxes")?.remove();
    }
  });

  vfax.events((event) => { if (event.type === "terminal" || rowOf(event.job_id)) { waiting.add(event.job_id); update(); } });
});
