// The btcl2 explorer: polls the sequencer's read-only JSON and renders it; no framework, no build step.
"use strict";

const POLL_MS = 2000;
const $ = (sel) => document.querySelector(sel);

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function btc(sats) {
  if (sats === null || sats === undefined) return "–";
  const sign = sats < 0 ? "-" : "";
  const abs = Math.abs(sats);
  return `${sign}${Math.floor(abs / 1e8)}.${String(abs % 1e8).padStart(8, "0")} BTC`;
}

function when(unix) {
  return unix ? new Date(unix * 1000).toISOString().replace("T", " ").replace(".000Z", "Z") : "";
}

function badge(status) {
  return `<span class="status ${esc(status)}" data-status="${esc(status)}">${esc(status)}</span>`;
}

async function getJSON(path) {
  const resp = await fetch(path, {cache: "no-store"});
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.message || `HTTP ${resp.status}`);
  return body;
}

function renderBatches(batches) {
  const rows = batches.map((b) => {
    const a = b.anchor;
    const status = a ? a.status : "unknown";
    const txids = a && a.txids.length ? a.txids.map((t) => `<div class="hash">${esc(t)}</div>`).join("") : "";
    return `<tr data-batch="${b.number}"><td><a href="#" data-q="${b.number}">${b.number}</a></td>` +
      `<td>${esc(when(b.timestamp))}</td><td>${b.transactions}</td><td>${b.deposits}</td>` +
      `<td>${b.l1OriginHeight}</td><td>${badge(status)}</td><td>${a ? a.confirmations : ""}</td><td>${txids}</td></tr>`;
  });
  $("#batches tbody").innerHTML = rows.join("") || `<tr><td colspan="8" class="muted">no batch sealed yet</td></tr>`;
}

const TERM_LABELS = {
  l2Balances: "+ L2 balances",
  l2WithdrawalsUnpaid: "+ L2 withdrawals not yet paid",
  depositsNotCredited: "+ deposits not yet credited",
  evmSide: "+ EVM side (deposits to EVM − EVM payouts)",
  withdrawalFees: "+ withdrawal fees kept",
  payoutFees: "− payout fees",
};

function renderFederation(f) {
  const c = f.conservation;
  const terms = Object.entries(c.terms)
    .map(([k, v]) => `<dt>${esc(TERM_LABELS[k] || k)}</dt><dd>${btc(k === "payoutFees" ? -v : v)}</dd>`).join("");
  $("#federation").innerHTML =
    `<dl><dt>address (${f.m}-of-${f.n})</dt><dd class="hash">${esc(f.address)}</dd>` +
    `<dt>federation BTC</dt><dd id="federation-btc">${btc(c.federationBtc)}</dd>${terms}` +
    `<dt>= owed</dt><dd>${btc(c.owed)}</dd>` +
    `<dt>conservation</dt><dd id="conservation">${badge(c.holds ? "ok" : "bad")} ` +
    `${c.holds ? "holds" : "DOES NOT HOLD"} at Bitcoin height ${c.bitcoinHeight}, batch ${c.headBatch ?? "–"}</dd></dl>`;
  $("#federation").classList.remove("muted");
}

function renderLifecycle(doc) {
  if (doc.kind === "address") {
    return `<div><b>address</b> <span class="hash">${esc(doc.id)}</span></div>` +
      `<dl><dt>balance</dt><dd>${btc(doc.balance)}</dd><dt>nonce</dt><dd>${doc.nonce}</dd>` +
      `<dt>at batch</dt><dd>${doc.batch ?? "–"}</dd></dl>`;
  }
  const info = ["amount", "fee", "from", "to", "recipient", "batch", "destination"]
    .filter((k) => doc[k] !== null && doc[k] !== undefined)
    .map((k) => `<dt>${k}</dt><dd class="${k === "amount" || k === "fee" ? "" : "hash"}">` +
      `${k === "amount" || k === "fee" ? btc(doc[k]) : esc(doc[k])}</dd>`).join("");
  const stages = doc.stages.map((s) =>
    `<tr data-stage="${esc(s.name)}" data-done="${s.done}"><td class="${s.done ? "done" : "todo"}">${s.done ? "✓" : "·"}</td>` +
    `<td>${esc(s.chain)}</td><td>${esc(s.name)}</td><td>${esc(when(s.time))}</td>` +
    `<td>${s.confirmations ?? ""}</td><td>${esc(s.detail ?? "")}</td>` +
    `<td>${(s.txid || "").split(",").filter(Boolean).map((t) => `<div class="hash">${esc(t)}</div>`).join("")}</td></tr>`).join("");
  return `<div><b>${esc(doc.kind)}</b> <span class="hash">${esc(doc.id)}</span> ` +
    `<span id="result-status">${badge(doc.status)}</span></div>` +
    `<dl>${info}</dl>` +
    `<table><thead><tr><th></th><th>chain</th><th>stage</th><th>time</th><th>conf.</th><th>detail</th><th>tx</th></tr></thead>` +
    `<tbody>${stages}</tbody></table>`;
}

let current = "";

async function showResult() {
  if (!current) return;
  try {
    $("#result").innerHTML = renderLifecycle(await getJSON(`/explorer/api/lookup?q=${encodeURIComponent(current)}`));
  } catch (e) {
    $("#result").innerHTML = `${badge("error")} ${esc(e.message)}`;
  }
}

async function refresh() {
  try {
    const batches = await getJSON("/explorer/api/batches?count=20");
    renderBatches(batches);
    $("#head").textContent = batches.length ? `head batch ${batches[0].number}` : "no batch yet";
  } catch (e) {
    $("#head").textContent = `sequencer unreachable: ${e.message}`;
  }
  try {
    renderFederation(await getJSON("/explorer/api/federation"));
  } catch (e) {
    $("#federation").textContent = `conservation check unavailable: ${e.message}`;
  }
  await showResult();
}

$("#search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  current = $("#q").value.trim();
  showResult();
});

document.addEventListener("click", (ev) => {
  const q = ev.target.getAttribute && ev.target.getAttribute("data-q");
  if (q !== null && q !== undefined) {
    ev.preventDefault();
    $("#q").value = q;
    current = q;
    showResult();
  }
});

refresh();
setInterval(refresh, POLL_MS);
