// Per-chunk SFT through the hypernetwork's recursion (docs/hypernet.md).
// An example is a query q and an answer a, cut into chunks a_1.. a_C of
// `chunk` tokens (the last may be shorter). The soft prompts are
//   S(1) = H(sp0, q),   S(c+1) = H(S(c), a_c)      (teacher forcing: the true chunks)
// and chunk c is scored by the model on
//   full:      [BOS] [S(c)] [q a_1 .. a_c]
//   recurrent: [BOS] [S(c)] [x_prev a_c]   (x_prev: the last token of q or of a_(c-1))
// with targets on the tokens of a_c only. The loss is
//   L = sum over examples and chunks of the chunk's summed cross-entropy / norm_tokens
// with norm_tokens the answer tokens of the whole global batch, so gradient
// accumulation over micro-batches equals one large batch.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "strata/generate.h"
#include "strata/model.h"
#include "train/sft_data.h"

namespace strata {

struct HyperExample {
  std::vector<int32_t> query;   // chat-formatted user turn, no BOS
  std::vector<int32_t> answer;  // the answer's tokens (EOS included when it fits)
  std::string source;           // "file:line", for messages
};

// Query/answer pairs from tokenized chat examples (train/sft_data.h): the
// answer is the last run of loss tokens (the final assistant turn and its end
// marker), the query everything before it without the leading BOS (earlier
// turns included). A query over max_query tokens is an error naming the
// example's file:line; an answer over max_answer tokens is cut to its first
// max_answer (then without EOS) and counted in *truncated.
std::vector<HyperExample> hyper_examples(const std::vector<SftExample>& examples, int32_t bos, int64_t max_query,
                                         int64_t max_answer, int64_t* truncated);

struct HyperSftOptions {
  int64_t chunk = 16;
  ChunkContext context = ChunkContext::Full;
  // Truncated backpropagation: no gradient flows from S(c+1) back into S(c)
  // for c >= 1 (sp0 still gets chunk 1's gradient through S(1) = H(sp0, q)).
  bool detach_between_chunks = false;
  // Add the gradient of the hypernetwork's token inputs into the embedding
  // table's (stage 2, where the embeddings train).
  bool embed_grads = true;
  // false: the same chunks without any soft prompt ([BOS] [context of chunk
  // c]), the baseline that shows what the soft prompt carries; the model
  // needs no hypernetwork then.
  bool soft_prompt = true;
};

// Forward over every chunk of `batch` and, with backward, adds dL/dθ of the
// model's and the hypernetwork's parameters into their gradient buffers
// (training must be enabled). Returns the summed cross-entropy of the answer
// tokens and their count. Errors: a model without a hypernetwork, an example
// with an empty answer.
Model::LossSum hypernet_sft(Model& model, std::span<const HyperExample> batch, const HyperSftOptions& opts,
                            double norm_tokens, bool backward);

}  // namespace strata
