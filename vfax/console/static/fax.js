// A received fax: the page viewer (thumbnails, the current page large, next/previous, zoom, rotate, also by
// keyboard), marking it read on opening (POST /v1/faxes/{id}/read) or unread again, and deleting it after a
// confirmation (DELETE /v1/faxes/{id}). Page images come from /v1/faxes/{id}/pages/{n}.png.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("fax");
  const id = box.dataset.fax;
  const base = `/v1/faxes/${encodeURIComponent(id)}`;
  const result = document.getElementById("action-result");
  const readState = document.getElementById("read-state");
  const toggle = document.getElementById("toggle-read");

  // -- read / unread ----------------------------------------------------------------------------------
  function showRead(read) {
    box.dataset.read = read ? "yes" : "no";
    vfax.setText(readState, read ? "read" : "unread");
    vfax.setText(toggle, read ? "Mark as unread" : "Mark as read");
  }
  async function markRead(read) {
    const fax = await vfax.api(`${base}/${read ? "read" : "unread"}`, { method: "POST" });
    showRead(fax.read);
    return fax;
  }
  toggle.addEventListener("click", async () => {
    toggle.disabled = true;
    try {
      const fax = await markRead(box.dataset.read !== "yes");
      vfax.setText(result, fax.read ? "Marked as read." : "Marked as unread.");
    } catch (error) {
      vfax.setText(result, `Not changed: ${error.message}`);
    } finally {
      toggle.disabled = false;
    }
  });
  if (box.dataset.read !== "yes") {
    markRead(true).catch((error) => vfax.setText(result, `Not marked read: ${error.message}`));
  }

  // -- delete, after a confirmation -------------------------------------------------------------------
  const del = document.getElementById("delete");
  const confirmBox = document.getElementById("confirm-delete");
  const yes = document.getElementById("delete-yes");
  const no = document.getElementById("delete-no");
  del.addEventListener("click", () => { confirmBox.hidden = false; no.focus(); });
  no.addEventListener("click", () => { confirmBox.hidden = true; del.focus(); });
  yes.addEventListener("click", async () => {
    yes.disabled = true;
    vfax.setText(result, "Deleting…");
    try {
      await vfax.api(base, { method: "DELETE" });
      vfax.setText(result, "Deleted.");
      window.location.assign(`/inbox?deleted=${encodeURIComponent(id)}`);
    } catch (error) {
      vfax.setText(result, `Not deleted: ${error.message}`);
      yes.disabled = false;
    }
  });

  // -- the page viewer --------------------------------------------------------------------------------
  const viewer = document.getElementById("viewer");
  if (!viewer) return;
  const WIDTHS = [400, 600, 800, 1100, 1400, 1728];
  const image = document.getElementById("page-image");
  const thumbs = document.getElementById("thumbs");
  const pageNo = document.getElementById("page-no");
  const buttons = Object.fromEntries(["prev", "next", "zoom-in", "zoom-out", "rotate-left", "rotate-right"]
    .map((name) => [name, document.getElementById(name)]));
  let count = Number(box.dataset.pages) || 1;
  let page = 1;
  let width = 800;
  let rotate = 0;

  function show() {
    viewer.dataset.page = String(page);
    viewer.dataset.width = String(width);
    viewer.dataset.rotate = String(rotate);
    image.src = `${base}/pages/${page}.png?width=${width}&rotate=${rotate}`;
    image.alt = `Page ${page} of ${count}${rotate ? `, turned ${rotate}°` : ""}`;
    vfax.setText(pageNo, `Page ${page} of ${count}`);
    buttons.prev.disabled = page <= 1;
    buttons.next.disabled = page >= count;
    buttons["zoom-out"].disabled = width <= WIDTHS[0];
    buttons["zoom-in"].disabled = width >= WIDTHS[WIDTHS.length - 1];
    for (const button of thumbs.querySelectorAll("button")) {
      button.setAttribute("aria-current", button.dataset.page === String(page) ? "true" : "false");
    }
  }
  const go = (n) => { page = Math.min(Math.max(1, n), count); show(); };
  const zoom = (step) => {
    const at = WIDTHS.indexOf(width);
    width = WIDTHS[Math.min(Math.max(0, at + step), WIDTHS.length - 1)];
    show();
  };
  const turn = (degrees) => { rotate = (rotate + degrees + 360) % 360; show(); };

  buttons.prev.addEventListener("click", () => go(page - 1));
  buttons.next.addEventListener("click", () => go(page + 1));
  buttons["zoom-in"].addEventListener("click", () => zoom(1));
  buttons["zoom-out"].addEventListener("click", () => zoom(-1));
  buttons["rotate-right"].addEventListener("click", () => turn(90));
  buttons["rotate-left"].addEventListener("click", () => turn(-90));
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    if (target && (target.isContentEditable || ["INPUT", "SELECT", "TEXTAREA"].includes(target.tagName))) return;
    const actions = { ArrowLeft: () => go(page - 1), ArrowRight: () => go(page + 1), "+": () => zoom(1),
      "=": () => zoom(1), "-": () => zoom(-1), r: () => turn(90), R: () => turn(-90) };
    const action = actions[event.key];
    if (action) { event.preventDefault(); action(); }
  });

  vfax.api(`${base}/pages`).then((listed) => {
    count = listed.count;
    thumbs.replaceChildren(...listed.pages.map((p) => vfax.el("li", {},
      vfax.el("button", { type: "button", dataset: { page: String(p.number) }, "aria-label": `Page ${p.number}` },
        vfax.el("img", { src: `${base}/pages/${p.number}.png?width=160`, alt: "", loading: "lazy" }),
        vfax.el("span", { text: String(p.number) })))));
    for (const button of thumbs.querySelectorAll("button")) {
      button.addEventListener("click", () => go(Number(button.dataset.page)));
    }
    show();
  }).catch((error) => vfax.setText(result, `The pages cannot be listed: ${error.message}`));
  show();
});
