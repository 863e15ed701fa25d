#include "text/bpe_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "strata/error.h"

namespace strata::text {

const char* const kGpt2SplitPattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {
std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  const int n = pcre2_get_error_message(code, buf, sizeof buf);
  return n < 0 ? "PCRE2 error " + std::to_string(code) : std::string(reinterpret_cast<char*>(buf), n);
}

// One JIT stack per thread: the default 32 KB can run out on long runs of whitespace under `\s+(?!\S)`.
pcre2_jit_stack* thread_jit_stack() {
  struct Holder {
    pcre2_jit_stack* stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
    ~Holder() { pcre2_jit_stack_free(stack); }
  };
  thread_local Holder h;
  return h.stack;
}

// Length of the character at s[i] for stepping past an empty match (1 for a byte that starts none).
size_t char_length(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
  return i + n <= s.size() ? n : 1;
}
}  // namespace

struct SplitRegex::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
  std::string where;
};

SplitRegex::SplitRegex(const std::string& pattern, bool literal, const std::string& where)
    : impl_(std::make_unique<Impl>()) {
  impl_->where = where;
  // MATCH_INVALID_UTF: arbitrary bytes may be encoded; invalid sequences simply never match.
  // (UCP means nothing for plain text, and PCRE2 refuses it beside LITERAL.)
  const uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  impl_->code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &err, &err_offset, nullptr);
  if (!impl_->code) fail(where, ": ", pcre2_message(err), " at offset ", err_offset);
  // Without JIT (not built for this CPU) the interpreter gives the same matches, only slower.
  impl_->jit = pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0;
}

SplitRegex::~SplitRegex() {
  if (impl_) pcre2_code_free(impl_->code);
}

void SplitRegex::split(std::string_view s, std::vector<std::string_view>& out) const {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
  pcre2_match_context* mc = pcre2_match_context_create(nullptr);
  if (!md || !mc) {
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    fail(impl_->where, ": out of memory for a regex match");
  }
  if (impl_->jit) pcre2_jit_stack_assign(mc, nullptr, thread_jit_stack());
  const auto subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t offset = 0, last = 0;
  int rc = 0;
  while (offset < s.size()) {
    rc = pcre2_match(impl_->code, subject, s.size(), offset, 0, md, mc);
    // The interpreter keeps its backtracking frames on the heap: the fallback for an exhausted JIT stack.
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
      rc = pcre2_match(impl_->code, subject, s.size(), offset, PCRE2_NO_JIT, md, mc);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) break;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t start = ov[0], end = ov[1];
    if (end == start) {  // an empty match selects nothing: look again one character further on
      offset = start + char_length(s, start);
      continue;
    }
    if (start > last) out.push_back(s.substr(last, start - last));
    out.push_back(s.substr(start, end - start));
    last = offset = end;
  }
  pcre2_match_data_free(md);
  pcre2_match_context_free(mc);
  if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) fail(impl_->where, ": regex match failed: ", pcre2_message(rc));
  if (last < s.size()) out.push_back(s.substr(last));
}

}  // namespace strata::text
