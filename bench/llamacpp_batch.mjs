// llama.cpp's aggregate generation speed with STREAMS sequences decoded
// together in one context (node-llama-cpp batches the sequences' tokens into
// one llama_decode per step, as llama.cpp's server does), for
// bench/serve_bench.sh. Sampling at temperature 0.8, end-of-sequence banned
// so every stream runs to MAX_TOKENS.
// Usage: node llamacpp_batch.mjs NODE_MODULES MODEL.gguf STREAMS MAX_TOKENS THREADS
// Prints {"streams", "tokens", "seconds", "tok_s", "build"}.
import fs from "node:fs";
import path from "node:path";
import {pathToFileURL} from "node:url";

const [modules, modelPath, streamsArg, maxArg, threadsArg] = process.argv.slice(2);
const streams = Number(streamsArg), maxTokens = Number(maxArg), threads = Number(threadsArg);
const {getLlama, TokenBias} = await import(pathToFileURL(path.join(modules, "node-llama-cpp", "dist", "index.js")).href);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: streams * 256, sequences: streams, threads, batchSize: 512});
const words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "house", "red"];
const eos = model.tokens.eos;
const run = async (i) => {
  const seq = context.getSequence();
  const prompt = [model.tokens.bos, ...model.tokenize(`${words[i % 12]} ${words[(i * 5 + 3) % 12]} ${i}`)];
  let n = 0;
  const bias = TokenBias.for(model).set(eos, "never");
  for await (const t of seq.evaluate(prompt, {temperature: 0.8, seed: i, tokenBias: bias})) {
    if (++n >= maxTokens) break;
  }
  return n;
};
const t0 = performance.now();
const counts = await Promise.all(Array.from({length: streams}, (_, i) => run(i)));
const seconds = (performance.now() - t0) / 1000;
const tokens = counts.reduce((a, b) => a + b, 0);
const meta = JSON.parse(fs.readFileSync(path.join(modules, "node-llama-cpp", "llama", "llama.cpp.info.json"), "utf8"));
console.log(JSON.stringify({streams, tokens, seconds, tok_s: tokens / seconds, build: meta.tag}));
await context.dispose();
await model.dispose();
await llama.dispose();
