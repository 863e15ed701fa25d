// llama.cpp's perplexity of a text file, windowed as `strata ppl --ctx N`
// windows it (the text tokenized once with BOS first, non-overlapping windows
// of N tokens, every token after a window's first predicted), through
// node-llama-cpp (docs/benchmarks.md, "Quality").
// Usage: node llamacpp_ppl.mjs NODE_MODULES MODEL.gguf TEXT_FILE CTX [THREADS]
// Prints one JSON line: {"perplexity", "mean_nll", "tokens", "predicted", "windows", "build"}.
import fs from "node:fs";
import path from "node:path";
import {pathToFileURL} from "node:url";

const [modules, modelPath, textPath, ctxArg, threadsArg] = process.argv.slice(2);
const ctx = Number(ctxArg), threads = Number(threadsArg ?? 2);
const entry = path.join(modules, "node-llama-cpp", "dist", "index.js");
const {getLlama} = await import(pathToFileURL(entry).href);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: ctx, batchSize: ctx, threads});
const sequence = context.getSequence();
let tokens = model.tokenize(fs.readFileSync(textPath, "utf8"));
const addBos = model.fileInfo.metadata?.tokenizer?.ggml?.add_bos_token;
if (model.tokens.bos != null && addBos !== false) tokens = [model.tokens.bos, ...tokens];
// The full softmax at temperature 1: no truncation of the distribution.
const next = {probabilities: true, options: {temperature: 1, topK: 0, topP: 1, minP: 0}};
let nll = 0, predicted = 0, windows = 0;
for (let start = 0; start < tokens.length; start += ctx) {
  const win = tokens.slice(start, start + ctx);
  if (win.length < 2) break;
  await sequence.clearHistory();
  const input = win.map((t, i) => (i + 1 < win.length ? [t, {generateNext: next}] : t));
  const out = await sequence.controlledEvaluate(input);
  for (let i = 0; i + 1 < win.length; ++i) {
    const p = out[i]?.next?.probabilities?.get(win[i + 1]);
    if (!(p > 0)) throw new Error(`no probability for token ${win[i + 1]} at ${start + i + 1}`);
    nll -= Math.log(p);
    ++predicted;
  }
  ++windows;
}
const build = JSON.parse(fs.readFileSync(path.join(modules, "node-llama-cpp", "llama", "llama.cpp.info.json"), "utf8")).tag;
console.log(JSON.stringify({perplexity: Math.exp(nll / predicted), mean_nll: nll / predicted, tokens: tokens.length,
                            predicted, windows, build}));
await context.dispose();
await model.dispose();
await llama.dispose();
