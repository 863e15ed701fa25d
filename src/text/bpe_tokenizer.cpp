// Byte-level BPE encoding and decoding; tokenizer.json parsing is in bpe_loader.cpp.
#include "text/bpe_tokenizer.h"

#include <cstring>
#include <deque>
#include <queue>

#include "strata/error.h"
#include "text/unicode_nfc.h"

namespace strata::text {

const std::array<std::string, 256>& byte_symbols() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    unsigned next = 256;
    for (unsigned b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const unsigned cp = printable ? b : next++;
      if (cp < 0x80) {
        t[b] = std::string(1, static_cast<char>(cp));
      } else {  // all code points here are below U+0800: two bytes
        t[b] = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
      }
    }
    return t;
  }();
  return table;
}

BpeTokenizer::~BpeTokenizer() = default;

void BpeTokenizer::check_id(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    fail(path_, ": token id ", id, " is outside the vocabulary [0, ", vocab_size(), ")");
}

const std::string& BpeTokenizer::piece(int32_t id) const {
  check_id(id);
  return pieces_[id];
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    check_id(id);
    out += bytes_[id];
  }
  return out;
}

std::vector<int32_t> BpeTokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos) out = prefix_ids_;
  // Tokens that are not normalised are found in the text as given; the rest of the pipeline runs on
  // the stretches between them, as Hugging Face's tokenizers does.
  std::vector<Piece> raw, norm;
  split_added(text, raw_added_, raw);
  std::string normalized;
  for (const Piece& p : raw) {
    if (p.id >= 0) {
      out.push_back(p.id);
      continue;
    }
    std::string_view s = p.text;
    if (nfc_) {
      normalized = nfc(s);
      s = normalized;
    }
    norm.clear();
    split_added(s, norm_added_, norm);
    for (const Piece& q : norm) {
      if (q.id >= 0)
        out.push_back(q.id);
      else
        encode_text(q.text, out);
    }
  }
  return out;
}

void BpeTokenizer::split_added(std::string_view s, const AddedSet& set, std::vector<Piece>& out) const {
  if (set.empty) {
    if (!s.empty()) out.push_back({-1, s});
    return;
  }
  size_t last = 0;
  for (size_t i = 0; i < s.size();) {
    const auto& cands = set.by_first[static_cast<unsigned char>(s[i])];
    const std::pair<std::string, int32_t>* hit = nullptr;
    for (const auto& c : cands) {  // longest first: the first that fits is the longest match here
      if (c.first.size() <= s.size() - i && std::memcmp(s.data() + i, c.first.data(), c.first.size()) == 0) {
        hit = &c;
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    if (i > last) out.push_back({-1, s.substr(last, i - last)});
    out.push_back({hit->second, {}});
    i += hit->first.size();
    last = i;
  }
  if (last < s.size()) out.push_back({-1, s.substr(last)});
}

void BpeTokenizer::encode_text(std::string_view s, std::vector<int32_t>& out) const {
  // Each step splits every current piece further; ByteLevel is always the last step.
  std::deque<std::string> owned;  // pieces given a leading space (a deque keeps their addresses)
  std::vector<std::string_view> pieces{s}, next;
  for (const PreStep& step : pre_) {
    next.clear();
    for (std::string_view p : pieces) {
      if (p.empty()) continue;
      if (step.add_prefix_space && p.front() != ' ') {
        std::string& q = owned.emplace_back(1, ' ');
        q.append(p);
        p = q;
      }
      if (step.regex)
        step.regex->split(p, next);
      else
        next.push_back(p);
    }
    pieces.swap(next);
  }
  for (std::string_view p : pieces)
    if (!p.empty()) bpe(p, out);
}

// Merges by rank over a linked list of symbols: a min-heap of candidate pairs ordered by (rank, left
// position), entries made stale by earlier merges skipped when popped, so a word of n bytes costs
// O(n log n) instead of a rescan per merge.
void BpeTokenizer::bpe(std::string_view word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    std::string mapped;
    for (char c : word) mapped += byte_symbols()[static_cast<unsigned char>(c)];
    const auto it = vocab_.find(mapped);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id, prev, next;  // id -1: merged into its left neighbour
  };
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  for (char c : word) {
    const int32_t id = byte_ids_[static_cast<unsigned char>(c)];
    if (fuse_unk_ && id == unk_ && !sym.empty() && sym.back().id == unk_) continue;
    const auto k = static_cast<int32_t>(sym.size());
    sym.push_back({id, k - 1, k + 1});
  }
  sym.back().next = -1;
  if (sym.size() == 1) {
    out.push_back(sym[0].id);
    return;
  }
  struct Candidate {
    int32_t rank, left, right, left_id, right_id, result;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  const auto consider = [&](int32_t l) {
    if (l < 0) return;
    const int32_t r = sym[l].next;
    if (r < 0) return;
    const auto it = merges_.find((uint64_t(uint32_t(sym[l].id)) << 32) | uint32_t(sym[r].id));
    if (it != merges_.end()) heap.push({it->second.rank, l, r, sym[l].id, sym[r].id, it->second.result});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) consider(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& l = sym[c.left];
    // Stale if either side has changed since the pair was queued (ids only ever grow longer, so an
    // unchanged id at an unchanged neighbour means the same pair).
    if (l.id != c.left_id || l.next != c.right || sym[c.right].id != c.right_id) continue;
    Symbol& r = sym[c.right];
    l.id = c.result;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = c.left;
    r.id = -1;
    consider(l.prev);
    consider(c.left);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

}  // namespace strata::text
