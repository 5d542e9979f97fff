// The job page: kept current from /v1/jobs/{id} whenever /v1/events says the job changed; the cancel
// button posts /v1/jobs/{id}/cancel.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("job");
  const id = box.dataset.job;
  const FINAL = ["completed", "failed", "cancelled"];
  const cancel = document.getElementById("cancel");
  const result = document.getElementById("action-result");
  const resubmit = document.getElementById("resubmit");
  const field = (name) => box.querySelector(`[data-field="${name}"]`);

  function eventRow(event) {
    const details = vfax.el("td", { class: "payload" });
    for (const [key, value] of Object.entries(event.payload || {})) {
      details.append(vfax.el("span", { text: `${key}=${typeof value === "object" ? JSON.stringify(value) : value}` }), " ");
    }
    return vfax.el("tr", { dataset: { seq: String(event.seq) } },
      vfax.el("td", { text: event.seq }), vfax.el("td", { text: vfax.when(event.at) }),
      vfax.el("td", { text: event.type }), vfax.el("td", { text: event.status }), details);
  }

  function show(job) {
    box.dataset.state = job.state;
    document.getElementById("job-state").replaceChildren(vfax.badge(job.state));
    vfax.setText(field("destination"), job.destination);
    vfax.setText(field("device"), job.device || "any");
    vfax.setText(field("attempts"), `${job.attempts} / ${job.max_attempts}`);
    vfax.setText(field("pages_sent"), job.pages_sent);
    vfax.setText(field("status"), job.status ? `${job.status}${job.status_name ? ` (${job.status_name})` : ""}` : "");
    vfax.setText(field("last_error"), job.last_error);
    vfax.setText(field("not_before"), vfax.when(job.not_before));
    vfax.setText(field("finished_at"), vfax.when(job.finished_at));
    cancel.hidden = FINAL.includes(job.state);
    resubmit.hidden = !FINAL.includes(job.state);
    const body = document.querySelector("#events tbody");
    const have = new Set(Array.from(body.rows, (row) => row.dataset.seq));
    for (const event of job.events || []) {
      if (!have.has(String(event.seq))) body.append(eventRow(event));
    }
  }

  const refresh = vfax.serial(async () => show(await vfax.api(`/v1/jobs/${encodeURIComponent(id)}`)));

  // refresh once the stream is open too: nothing that happened between the page and the stream is lost
  vfax.events(() => refresh(), { job: id, onOpen: () => refresh() });

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    vfax.setText(result, "Cancelling…");
    try {
      const job = await vfax.api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
      vfax.setText(result, job.state === "cancelled" ? "Cancelled." : "Cancel requested; the call is being ended.");
      await refresh();
    } catch (error) {
      vfax.setText(result, `Not cancelled: ${error.message}`);
    } finally {
      cancel.disabled = false;
    }
  });

  resubmit.addEventListener("click", async () => {
    resubmit.disabled = true;
    vfax.setText(result, "Queueing again…");
    try {
      const job = await vfax.api(`/v1/jobs/${encodeURIComponent(id)}/resubmit`, { method: "POST" });
      window.location.assign(`/outbound/${encodeURIComponent(job.id)}`);
    } catch (error) {
      vfax.setText(result, `Not queued: ${error.message}`);
      resubmit.disabled = false;
    }
  });
});
