// Load for `strata serve` (bench/serve_bench.sh), with Node's own fetch.
// Usage:
//   node serve_load.mjs URL throughput STREAMS MAX_TOKENS
//     STREAMS streamed completions at once; prints {"streams", "tokens", "seconds", "tok_s"}.
//   node serve_load.mjs URL followup TEXT_FILE CHARS
//     a first chat turn on CHARS characters of the file, then the follow-up
//     turn streamed; prints {"prompt_tokens", "cached_tokens", "ttft_s"} of the follow-up.
import fs from "node:fs";

const [url, mode, ...rest] = process.argv.slice(2);

async function stream(path, body, onFirst) {
  const r = await fetch(url + path, {method: "POST", headers: {"Content-Type": "application/json"},
                                     body: JSON.stringify({...body, stream: true, stream_options: {include_usage: true}})});
  if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
  const decoder = new TextDecoder();
  let buf = "", usage = null, text = "", first = false;
  for await (const part of r.body) {
    buf += decoder.decode(part, {stream: true});
    let at;
    while ((at = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, at);
      buf = buf.slice(at + 2);
      if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
      const j = JSON.parse(event.slice(6));
      if (j.usage) usage = j.usage;
      const piece = j.choices?.[0]?.delta?.content ?? j.choices?.[0]?.text ?? "";
      if (piece && !first) {
        first = true;
        onFirst?.();
      }
      text += piece;
    }
  }
  return {usage, text};
}

if (mode === "throughput") {
  const streams = Number(rest[0]), maxTokens = Number(rest[1]);
  const words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "house", "red"];
  const t0 = performance.now();
  const results = await Promise.all(Array.from({length: streams}, (_, i) =>
      stream("/v1/completions", {prompt: `${words[i % 12]} ${words[(i * 5 + 3) % 12]} ${i}`, max_tokens: maxTokens,
                                 temperature: 0.8, seed: i, logit_bias: {"2": -100}})));
  const seconds = (performance.now() - t0) / 1000;
  const tokens = results.reduce((n, r) => n + r.usage.completion_tokens, 0);
  console.log(JSON.stringify({streams, tokens, seconds, tok_s: tokens / seconds}));
} else if (mode === "followup") {
  const text = fs.readFileSync(rest[0], "utf8").slice(0, Number(rest[1]));
  const turn1 = [{role: "user", content: text}];
  const first = await stream("/v1/chat/completions", {messages: turn1, max_tokens: 16, temperature: 0});
  const turn2 = [...turn1, {role: "assistant", content: first.text}, {role: "user", content: "And then?"}];
  const t0 = performance.now();
  let ttft = null;
  const second = await stream("/v1/chat/completions", {messages: turn2, max_tokens: 4, temperature: 0},
                              () => { ttft = (performance.now() - t0) / 1000; });
  console.log(JSON.stringify({prompt_tokens: second.usage.prompt_tokens, cached_tokens: second.usage.prompt_tokens_details.cached_tokens,
                              ttft_s: ttft}));
} else {
  throw new Error(`unknown mode ${mode}`);
}
