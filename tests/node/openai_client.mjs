// strata serve through the official OpenAI client for Node
// (tests/cli/test_cli_serve.cpp runs it against a server on loopback).
// Usage: node openai_client.mjs NODE_MODULES BASE_URL API_KEY
// Prints "ok" and exits 0 when every check passes; otherwise prints what
// failed and exits 1.
import path from "node:path";
import {pathToFileURL} from "node:url";

const [modules, baseURL, apiKey] = process.argv.slice(2);
const {default: OpenAI} = await import(pathToFileURL(path.join(modules, "openai", "index.mjs")).href);
const client = new OpenAI({baseURL, apiKey, maxRetries: 0, timeout: 60000});
const failures = [];
const check = (cond, what) => { if (!cond) failures.push(what); };

// Models.
const models = await client.models.list();
check(models.data.length === 1, "models.list has one model");
const id = models.data[0].id;
check((await client.models.retrieve(id)).id === id, "models.retrieve");

// Chat, whole.
const messages = [{role: "system", content: "Be brief."}, {role: "user", content: "the cat sat"}];
const whole = await client.chat.completions.create({model: id, messages, max_tokens: 8, temperature: 0});
check(whole.object === "chat.completion", "chat object");
check(whole.choices[0].message.role === "assistant", "chat role");
check(["stop", "length"].includes(whole.choices[0].finish_reason), "chat finish_reason");
check(whole.usage.prompt_tokens > 0 && whole.usage.total_tokens ===
          whole.usage.prompt_tokens + whole.usage.completion_tokens, "chat usage");
check(whole.usage.prompt_tokens_details.cached_tokens >= 0, "chat cached_tokens");

// Chat, streamed: the same text, and the usage chunk last.
const stream = await client.chat.completions.create(
    {model: id, messages, max_tokens: 8, temperature: 0, stream: true, stream_options: {include_usage: true}});
let text = "", usage = null, role = null;
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  const delta = chunk.choices[0]?.delta;
  if (delta?.role) role = delta.role;
  if (delta?.content) text += delta.content;
}
check(role === "assistant", "stream role first");
check(text === whole.choices[0].message.content, `stream text ${JSON.stringify(text)} equals the whole answer`);
check(usage && usage.completion_tokens === whole.usage.completion_tokens, "stream usage");

// Completions with a seed: the same seed gives the same text.
const a = await client.completions.create({model: id, prompt: "the dog", max_tokens: 6, temperature: 0.9, seed: 3});
const b = await client.completions.create({model: id, prompt: "the dog", max_tokens: 6, temperature: 0.9, seed: 3});
check(a.object === "text_completion" && a.choices[0].text === b.choices[0].text, "seeded completions repeat");

// Errors arrive as the client's exceptions.
const expectError = async (cls, what, f) => {
  try {
    await f();
    failures.push(`${what}: no error`);
  } catch (e) {
    check(e instanceof cls, `${what}: ${e.constructor.name} is ${cls.name} (${e.message})`);
  }
};
await expectError(OpenAI.BadRequestError, "bad top_p",
                  () => client.chat.completions.create({model: id, messages, top_p: -1}));
await expectError(OpenAI.NotFoundError, "another model", () => client.models.retrieve("not-" + id));
const wrong = new OpenAI({baseURL, apiKey: apiKey + "x", maxRetries: 0});
await expectError(OpenAI.AuthenticationError, "wrong key", () => wrong.models.list());

if (failures.length) {
  console.log(failures.join("\n"));
  process.exit(1);
}
console.log("ok");
