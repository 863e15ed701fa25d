// NFC: full canonical decomposition, canonical ordering of combining marks, then
// canonical composition (UAX #15), with Hangul syllables handled arithmetically.
#include "text/unicode_nfc.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace strata::text {
namespace {

struct CccRange {
  char32_t first, last;
  uint8_t ccc;
};
struct Decomposition {
  char32_t cp, first, second;  // second == 0: a singleton
  bool composes;
};
#include "text/unicode_nfc_tables.inc"

constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;
// A byte that is not part of valid UTF-8 travels as this flag plus its value: class 0, no mappings.
constexpr char32_t kRawByte = 0x80000000u;

uint8_t ccc_of(char32_t c) {
  const auto it = std::upper_bound(std::begin(kCccRanges), std::end(kCccRanges), c,
                                   [](char32_t v, const CccRange& r) { return v < r.first; });
  if (it == std::begin(kCccRanges)) return 0;
  const CccRange& r = *(it - 1);
  return c <= r.last ? r.ccc : 0;
}

const Decomposition* decomposition_of(char32_t c) {
  const auto it = std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), c,
                                   [](const Decomposition& d, char32_t v) { return d.cp < v; });
  return it != std::end(kDecompositions) && it->cp == c ? it : nullptr;
}

const std::unordered_map<uint64_t, char32_t>& composition_pairs() {
  static const auto* pairs = [] {
    auto* m = new std::unordered_map<uint64_t, char32_t>();
    for (const Decomposition& d : kDecompositions)
      if (d.composes) (*m)[(uint64_t{d.first} << 32) | d.second] = d.cp;
    return m;
  }();
  return *pairs;
}

void decompose(char32_t c, std::vector<char32_t>& out) {
  if (c >= kSBase && c < kSBase + kSCount) {
    const char32_t s = c - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  const Decomposition* d = (c & kRawByte) ? nullptr : decomposition_of(c);
  if (!d) {
    out.push_back(c);
    return;
  }
  decompose(d->first, out);
  if (d->second) decompose(d->second, out);
}

char32_t compose_pair(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto& pairs = composition_pairs();
  const auto it = pairs.find((uint64_t{a} << 32) | b);
  return it == pairs.end() ? 0 : it->second;
}

// Decodes one well-formed UTF-8 character (RFC 3629: no overlongs, surrogates or values past U+10FFFF)
// at s[i]; returns its length, or 0 if the bytes there are not one.
size_t decode_utf8(std::string_view s, size_t i, char32_t* out) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  size_t n;
  char32_t v;
  if (c < 0x80) return *out = c, 1;
  if (c >= 0xC2 && c <= 0xDF)
    n = 2, v = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF)
    n = 3, v = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4)
    n = 4, v = c & 0x07;
  else
    return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(k) & 0xC0) != 0x80) return 0;
    v = (v << 6) | (b(k) & 0x3F);
  }
  if ((n == 3 && v < 0x800) || (n == 4 && (v < 0x10000 || v > 0x10FFFF)) || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *out = v;
  return n;
}

void append_utf8(char32_t c, std::string& out) {
  if (c & kRawByte) {
    out += static_cast<char>(c & 0xFF);
  } else if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

}  // namespace

std::string nfc(std::string_view s) {
  // Every code point below U+0300 is unchanged by NFC and never combines with what follows unless that is
  // U+0300 or above, whose UTF-8 lead bytes are 0xCC and up; most text takes this exit.
  if (std::none_of(s.begin(), s.end(), [](char ch) { return static_cast<unsigned char>(ch) >= 0xCC; }))
    return std::string(s);

  std::vector<char32_t> cps;
  cps.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    char32_t c;
    const size_t n = decode_utf8(s, i, &c);
    if (n == 0) {
      cps.push_back(kRawByte | static_cast<unsigned char>(s[i]));
      ++i;
    } else {
      decompose(c, cps);
      i += n;
    }
  }
  std::vector<uint8_t> cls(cps.size());
  for (size_t i = 0; i < cps.size(); ++i) cls[i] = (cps[i] & kRawByte) ? 0 : ccc_of(cps[i]);
  // Canonical ordering: a stable sort of each run of non-starters by class (runs are short: insertion sort).
  for (size_t i = 1; i < cps.size(); ++i) {
    for (size_t j = i; j > 0 && cls[j] != 0 && cls[j - 1] > cls[j]; --j) {
      std::swap(cps[j], cps[j - 1]);
      std::swap(cls[j], cls[j - 1]);
    }
  }
  // Composition: each character joins the last starter unless a character between them blocks it
  // (a starter, or a mark of the same or a higher class).
  std::vector<char32_t> out;
  std::vector<uint8_t> out_cls;
  out.reserve(cps.size());
  out_cls.reserve(cps.size());
  std::ptrdiff_t starter = -1;
  for (size_t i = 0; i < cps.size(); ++i) {
    const char32_t c = cps[i];
    const uint8_t cc = cls[i];
    if (starter >= 0 && !(c & kRawByte) && !(out[starter] & kRawByte)) {
      const bool adjacent = static_cast<size_t>(starter) + 1 == out.size();
      const uint8_t last = out_cls.back();
      if (adjacent || (last != 0 && last < cc)) {
        if (const char32_t comp = compose_pair(out[starter], c)) {
          out[starter] = comp;
          continue;
        }
      }
    }
    if (cc == 0) starter = static_cast<std::ptrdiff_t>(out.size());
    out.push_back(c);
    out_cls.push_back(cc);
  }
  std::string text;
  text.reserve(s.size());
  for (char32_t c : out) append_utf8(c, text);
  return text;
}

}  // namespace strata::text
