// llama.cpp's prefill and decode speed on a GGUF, through node-llama-cpp's
// prebuilt libraries (bench/vs_llamacpp.sh runs it beside strata bench).
// Usage: node llamacpp_speed.mjs NODE_MODULES MODEL.gguf THREADS PROMPT_LEN GEN
// Prints one JSON line: {"prefill_tok_s", "decode_tok_s", "build"}.
import path from "node:path";
import fs from "node:fs";
import {pathToFileURL} from "node:url";

const [modules, modelPath, threads, promptLen, gen] = process.argv.slice(2);
const entry = path.join(modules, "node-llama-cpp", "dist", "index.js");
const {getLlama} = await import(pathToFileURL(entry).href);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath, useMmap: true});
const P = Number(promptLen), G = Number(gen);
const context = await model.createContext({contextSize: P + G + 16, threads: Number(threads), batchSize: P});
const sequence = context.getSequence();
// A fixed pseudo-random prompt of ordinary tokens (ids from 100 up to the vocabulary, at most 20000).
const vocab = Number(model.fileInfo.metadata?.llama?.vocab_size ?? 32000);
const span = Math.max(1, Math.min(20000, vocab - 100));
let x = 12345;
const prompt = [model.tokens.bos ?? 1];
while (prompt.length < P) {
  x = (x * 1103515245 + 12345) % 2147483648;
  prompt.push(100 + (x % span));
}
let t0 = process.hrtime.bigint();
await sequence.evaluateWithoutGeneratingNewTokens(prompt);
const prefill = Number(process.hrtime.bigint() - t0) / 1e9;
let n = 0;
t0 = process.hrtime.bigint();
for await (const t of sequence.evaluate([prompt[P - 1]], {temperature: 0})) {
  if (++n >= G) break;
}
const decode = Number(process.hrtime.bigint() - t0) / 1e9;
const meta = JSON.parse(fs.readFileSync(path.join(modules, "node-llama-cpp", "llama", "llama.cpp.info.json"), "utf8"));
console.log(JSON.stringify({prefill_tok_s: P / prefill, decode_tok_s: G / decode, build: meta.tag}));
await context.dispose();
await model.dispose();
await llama.dispose();
