// Unicode Normalization Form C, for tokenizer.json files whose normalizer is NFC
// (GPT-NeoX-20B's). Tables: src/text/unicode_nfc_tables.inc.
#pragma once
#include <string>
#include <string_view>

namespace strata::text {

// Returns the NFC form of UTF-8 `s`. Bytes that are not valid UTF-8 are copied
// through unchanged and nothing composes across them, so the function never fails
// and valid text around them is normalised as usual.
std::string nfc(std::string_view s);

}  // namespace strata::text
