// Soak load for `strata serve` (scripts/soak_serve.sh), with Node's own fetch.
//   node serve_soak.mjs URL SECONDS CLIENTS
// CLIENTS loops send a mix until SECONDS have passed:
//   - completions and chat completions, whole and streamed, sampled and greedy;
//   - streams the client abandons after the first chunk (the server must
//     cancel them and free their slot);
//   - requests that must be refused: a bad field (400), an unknown model
//     path (404), a body over the limit (413), broken JSON (400);
//   - a greedy probe whose answer must never change.
// A 503 with Retry-After (queue full) is an allowed answer, counted apart.
// Prints one JSON line: counts per kind and every unexpected answer (at most 20).
const [url, secondsArg, clientsArg] = process.argv.slice(2);
const seconds = Number(secondsArg), clients = Number(clientsArg);
const counts = {}, unexpected = [];
const count = (k) => { counts[k] = (counts[k] ?? 0) + 1; };
const fail = (what) => { count("unexpected"); if (unexpected.length < 20) unexpected.push(what); };
const words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "house", "red", "Lily", "Tom"];
const say = (i) => `${words[i % 14]} ${words[(i * 5 + 3) % 14]} ${words[(i * 7 + 1) % 14]}`;

async function post(path, body, raw) {
  return fetch(url + path, {method: "POST", headers: {"Content-Type": "application/json"},
                            body: raw ?? JSON.stringify(body)});
}

// Reads an SSE stream to [DONE]; returns its text (or, with abandon, stops after one event).
async function readStream(r, abandon) {
  const reader = r.body.getReader(), decoder = new TextDecoder();
  let buf = "", text = "", done = false;
  while (!done) {
    const {value, done: end} = await reader.read();
    if (end) break;
    buf += decoder.decode(value, {stream: true});
    let at;
    while ((at = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, at);
      buf = buf.slice(at + 2);
      if (abandon) { await reader.cancel(); return null; }
      if (ev === "data: [DONE]") { done = true; break; }
      if (!ev.startsWith("data: ")) continue;
      const j = JSON.parse(ev.slice(6));
      text += j.choices?.[0]?.delta?.content ?? j.choices?.[0]?.text ?? "";
    }
  }
  if (!done) throw new Error("stream ended without [DONE]");
  return text;
}

let probe = null;  // the greedy probe's first answer
async function one(c, i) {
  const kind = (c * 7 + i) % 12;
  const seed = c * 100000 + i;
  try {
    if (kind <= 3) {  // whole completion or chat, sampled
      const chat = kind % 2 === 1;
      const r = await post(chat ? "/v1/chat/completions" : "/v1/completions",
                           chat ? {messages: [{role: "user", content: say(i)}], max_tokens: 8, temperature: 0.9, seed}
                                : {prompt: say(i), max_tokens: 8, temperature: 0.9, seed, stop: ["."]});
      if (r.status === 503) return count("busy");
      if (r.status !== 200) return fail(`whole ${r.status} ${await r.text()}`);
      const j = await r.json();
      if (!j.choices?.length || !j.usage) return fail(`whole: bad body ${JSON.stringify(j)}`);
      return count(chat ? "chat" : "completion");
    }
    if (kind <= 6) {  // streamed; kind 6 abandons after the first event
      const r = await post("/v1/chat/completions", {messages: [{role: "user", content: say(i)}], max_tokens: 12,
                                                    temperature: 0.7, seed, stream: true});
      if (r.status === 503) { await r.text(); return count("busy"); }
      if (r.status !== 200) return fail(`stream ${r.status} ${await r.text()}`);
      await readStream(r, kind === 6);
      return count(kind === 6 ? "abandoned" : "streamed");
    }
    if (kind === 7) {  // greedy probe: always the same answer
      const r = await post("/v1/completions", {prompt: "Once upon a time", max_tokens: 10, temperature: 0});
      if (r.status === 503) return count("busy");
      if (r.status !== 200) return fail(`probe ${r.status}`);
      const text = (await r.json()).choices[0].text;
      probe ??= text;
      if (text !== probe) return fail(`probe changed: ${JSON.stringify(probe)} -> ${JSON.stringify(text)}`);
      return count("probe");
    }
    const refusals = {
      8: [() => post("/v1/completions", {prompt: "x", max_tokens: -3}), 400],
      9: [() => post("/v1/chat/completions", {messages: "not a list"}), 400],
      10: [() => post("/v1/completions", null, "{\"prompt\": \"unterminated"), 400],
      11: [() => fetch(url + "/v1/models/not-this-one"), 404],
    };
    const [send, want] = refusals[kind];
    const r = await send();
    const body = await r.text();
    if (r.status !== want) return fail(`refusal ${kind}: ${r.status} ${body}`);
    if (!JSON.parse(body).error?.message) return fail(`refusal ${kind}: no error message: ${body}`);
    return count("refused");
  } catch (e) {
    fail(`kind ${kind}: ${e}`);
  }
}

async function oversized() {  // one body over --body-limit per client loop round
  const r = await post("/v1/completions", null, JSON.stringify({prompt: "y".repeat(2 << 20)}));
  await r.text();
  if (r.status !== 413) fail(`oversized: ${r.status}`);
  else count("too_large");
}

const end = performance.now() + seconds * 1000;
await Promise.all(Array.from({length: clients}, async (_, c) => {
  for (let i = 0; performance.now() < end; ++i) {
    await one(c, i);
    if (i % 50 === 49) await oversized();
  }
}));
console.log(JSON.stringify({seconds, clients, counts, unexpected}));
