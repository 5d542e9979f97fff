// The overview: devices, nodes and calls from /v1/devices and /v1/nodes, refreshed on every event (and
// every 15 s, since calls are reported with each node's heartbeat); today's counters count the terminal
// events that arrive.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const counted = new Set();

  function bump(name) {
    const element = document.getElementById(`count-${name}`);
    vfax.setText(element, Number(element.textContent || 0) + 1);
  }

  const refresh = vfax.serial(async () => {
    const [{ devices }, { nodes }] = await Promise.all([vfax.api("/v1/devices"), vfax.api("/v1/nodes")]);
    const deviceRows = devices.map((d) => vfax.el("tr", { dataset: { device: d.name } },
      vfax.el("td", { text: d.name }), vfax.el("td", { text: d.uri ?? "" }),
      vfax.el("td", { class: "reg", text: d.registration ?? "" }),
      vfax.el("td", { class: "calls", text: `${d.active_calls ?? 0} / ${d.channels ?? ""}` })));
    document.querySelector("#devices tbody").replaceChildren(...deviceRows);
    const nodeRows = nodes.map((n) => vfax.el("tr", { dataset: { node: n.id } },
      vfax.el("td", { text: n.id }), vfax.el("td", { text: n.state + (n.draining ? " (draining)" : "") }),
      vfax.el("td", { text: Object.entries(n.registrations).map(([k, v]) => `${k}: ${v}`).join(", ") }),
      vfax.el("td", { text: n.calls.length }), vfax.el("td", { text: vfax.when(n.heartbeat_at) })));
    document.querySelector("#nodes tbody").replaceChildren(...nodeRows);
    const callRows = [];
    for (const n of nodes) {
      for (const c of n.calls) {
        const target = c.id && c.kind === "send"
          ? vfax.el("a", { href: `/outbound/${encodeURIComponent(c.id)}`, text: c.id }) : (c.id ?? "");
        callRows.push(vfax.el("tr", {}, vfax.el("td", { text: n.id }), vfax.el("td", { text: c.kind }),
          vfax.el("td", { text: c.device }), vfax.el("td", {}, target), vfax.el("td", { text: c.status }),
          vfax.el("td", { text: c.pages })));
      }
    }
    document.querySelector("#calls tbody").replaceChildren(...callRows);
  });

  async function count(event) {
    if (counted.has(event.job_id)) return;
    counted.add(event.job_id);
    try {
      const job = await vfax.api(`/v1/jobs/${encodeURIComponent(event.job_id)}`);
      if (job.state === "completed") bump("sent");
      else if (job.state === "failed") bump("failed");
    } catch (error) {
      if (error.status !== 404) throw error;
      const fax = await vfax.api(`/v1/faxes/${encodeURIComponent(event.job_id)}`);
      if (fax.state === "completed" || fax.state === "partial") bump("received");
    }
  }

  vfax.events((event) => {
    refresh();
    if (event.terminal) count(event).catch((error) => vfax.say(error.message));
  }, { onOpen: () => refresh() });
  setInterval(refresh, 15000);
});
