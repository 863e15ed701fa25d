// llama.cpp's greedy continuation of a prompt, through node-llama-cpp (the
// interoperability tests run it: tests/cli/test_cli_gguf.cpp).
// Usage: node greedy.mjs NODE_MODULES MODEL.gguf PROMPT N
// Prints one JSON line: {"prompt": [ids], "tokens": [ids], "text": "..."}.
import path from "node:path";
import {pathToFileURL} from "node:url";

const [modules, modelPath, prompt, n] = process.argv.slice(2);
const entry = path.join(modules, "node-llama-cpp", "dist", "index.js");
const {getLlama} = await import(pathToFileURL(entry).href);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: 512, threads: 1});
const sequence = context.getSequence();
let tokens = model.tokenize(prompt);
const addBos = model.fileInfo.metadata?.tokenizer?.ggml?.add_bos_token;
if (model.tokens.bos != null && addBos !== false) tokens = [model.tokens.bos, ...tokens];
const out = [];
for await (const t of sequence.evaluate(tokens, {temperature: 0})) {
  out.push(t);
  if (out.length >= Number(n)) break;
}
console.log(JSON.stringify({prompt: Array.from(tokens), tokens: out, text: model.detokenize(out)}));
await context.dispose();
await model.dispose();
await llama.dispose();
