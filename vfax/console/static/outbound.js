// The outbound list: a row changes in place when /v1/events reports its job. On the last page (the list
// is oldest first, as GET /v1/jobs) newer jobs that match the filters are added: a job has no event
// until a device claims it, so the page also asks GET /v1/jobs for rows after its own every 3 s.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("jobs");
  const body = table.tBodies[0];
  const states = (table.dataset.states || "").split(",").filter(Boolean);
  const device = table.dataset.device || "";
  const destination = table.dataset.destination || "";
  const lastPage = table.dataset.full !== "yes";
  const offset = Number(table.dataset.offset || 0);
  const since = table.dataset.since || "";
  const until = table.dataset.until || "";

  const matches = (job) =>
    (!states.length || states.includes(job.state)) &&
    (!device || job.device === device) &&
    (!destination || job.destination === destination);

  function fill(row, job) {
    const cell = (name) => row.querySelector(`[data-field="${name}"]`);
    cell("state").replaceChildren(vfax.badge(job.state));
    vfax.setText(cell("destination"), job.destination);
    vfax.setText(cell("device"), job.device || "any");
    vfax.setText(cell("attempts"), `${job.attempts} / ${job.max_attempts}`);
    vfax.setText(cell("pages_sent"), job.pages_sent);
    vfax.setText(cell("status"), job.status || "");
    vfax.setText(cell("created_at"), vfax.when(job.created_at));
  }

  function newRow(job) {
    const link = vfax.el("a", { href: `/outbound/${encodeURIComponent(job.id)}`, text: job.id });
    const row = vfax.el("tr", { dataset: { job: job.id } }, vfax.el("td", {}, link));
    for (const name of ["state", "destination", "device", "attempts", "pages_sent", "status", "created_at"]) {
      row.append(vfax.el("td", { dataset: { field: name } }));
    }
    return row;
  }

  const rowOf = (id) => Array.from(body.rows).find((row) => row.dataset.job === id);
  const waiting = new Set();
  const update = vfax.serial(async () => {
    for (const id of Array.from(waiting)) {
      waiting.delete(id);
      let job;
      try { job = await vfax.api(`/v1/jobs/${encodeURIComponent(id)}`); } catch (error) {
        if (error.status === 404) continue; // a received fax's event
        throw error;
      }
      const row = rowOf(id);
      if (row) fill(row, job);
    }
  });

  function add(job) {
    if (rowOf(job.id) || !matches(job)) return;
    const row = newRow(job);
    body.append(row);
    fill(row, job);
    document.getElementById("no-jobs")?.remove();
  }

  // rows after ours, with the page's filters; `seen`: the rows the API has given so far
  let seen = Number(table.dataset.seen || 0);
  const newer = vfax.serial(async () => {
    if (!lastPage) return;
    const query = new URLSearchParams({ offset: String(offset + seen), limit: "100" });
    for (const state of states) query.append("state", state);
    if (device) query.set("device", device);
    if (destination) query.set("destination", destination);
    if (since) query.set("since", since);
    if (until) query.set("until", until);
    const { jobs } = await vfax.api(`/v1/jobs?${query}`);
    seen += jobs.length;
    jobs.forEach(add);
  });

  vfax.events((event) => { waiting.add(event.job_id); update(); newer(); }, {
    onOpen: () => { for (const row of body.rows) waiting.add(row.dataset.job); update(); newer(); },
  });
  setInterval(newer, 3000);
});
