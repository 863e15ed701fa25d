// Sliding GLA and Sliding RetNet (docs/linear-attention.md; spec §1.4, §1.5,
// §4.1, §5.1, §5.5): parameter counts of the presets from the §1.5 formulas,
// the layer layout, the heads and widths, and decode-state sizes constant in
// the sequence's length. (Decode == forward, snapshots and batching of the
// tiny presets run with the other hybrids in test_samba_model.cpp.)
#include <gtest/gtest.h>

#include "model/stack.h"
#include "strata/model.h"

namespace strata {
namespace {

int64_t mlp(int64_t d, int64_t dp) { return 3 * d * dp; }
int64_t swa(int64_t d, int64_t H) { return d * 3 * H * 128 + d * d; }  // H = H_kv, h_d 128
int64_t gla(int64_t d) { return 2 * d * (d / 2) + 2 * d * d + d * 16 + 16 * (d / 2) + d / 2 + d * d + 384; }
int64_t retnet(int64_t d, int64_t Hr) { return 2 * d * d + 2 * (2 * d * d) + 2 * d * d + 2 * d / Hr; }

// blocks / 2 units of [mixer, MLP, SWA, MLP], a norm per sub-layer and the final norm, embeddings.
int64_t total(int64_t mixer, int64_t d, int64_t dp, int64_t H, int64_t blocks, bool tied) {
  return blocks / 2 * (mixer + swa(d, H) + 2 * mlp(d, dp)) + (2 * blocks + 1) * d + (tied ? 1 : 2) * 32000 * d;
}

TEST(SlidingLinearPresets, ParameterCountsFollowTheFormulas) {
  EXPECT_EQ(gla(1536), 9475200);
  EXPECT_EQ(count_params(preset_config("sliding-gla-438m")).total, total(gla(1536), 1536, 4096, 12, 12, false));
  EXPECT_EQ(count_params(preset_config("sliding-gla-438m")).total, 438309120);
  EXPECT_EQ(count_params(preset_config("sliding-gla-1.2b")).total, total(gla(2304), 2304, 6144, 18, 18, true));
  EXPECT_EQ(count_params(preset_config("sliding-retnet-446m")).total, total(retnet(1536, 6), 1536, 4096, 12, 12, true));
  EXPECT_EQ(count_params(preset_config("sliding-retnet-446m")).total, 445555200);
  EXPECT_EQ(count_params(preset_config("sliding-retnet-1.4b")).total, total(retnet(2304, 9), 2304, 6144, 18, 18, true));
  EXPECT_NEAR(count_params(preset_config("sliding-gla-1.2b")).total / 1e9, 1.22, 0.01);
  EXPECT_NEAR(count_params(preset_config("sliding-retnet-1.4b")).total / 1e9, 1.41, 0.01);
}

TEST(SlidingLinearPresets, LayoutAndConstantDecodeState) {
  // preset, mixer kind, H, values per mixer state (spec §4.3 / §5.5)
  const std::tuple<const char*, const char*, int64_t> cases[] = {
      {"sliding-gla-438m", "gla", 294912},
      {"sliding-gla-1.2b", "gla", 442368},
      {"sliding-retnet-446m", "retnet", 786432},
      {"sliding-retnet-1.4b", "retnet", 1179648},
  };
  for (const auto& [preset, kind, values] : cases) {
    const Config c = preset_config(preset);
    Stack s = build_stack(c);
    ASSERT_EQ(s.blocks.size(), static_cast<size_t>(2 * c.num_hidden_layers)) << preset;
    for (int64_t i = 0; i < c.num_hidden_layers; ++i)  // block i's mixer: GLA / RetNet for even i, SWA for odd
      EXPECT_EQ(s.blocks[2 * i]->mixer->kind(), i % 2 == 0 ? kind : "attention") << preset << " " << i;
    bool seen = false;
    for (const StateUse& u : state_use(s)) {
      if (u.kind != kind) continue;
      seen = true;
      EXPECT_EQ(u.each.at(1 << 20), values * 4 + 8) << preset;
      EXPECT_EQ(u.each.at(1 << 20), u.each.at(1)) << preset << ": the state grows with the sequence";
    }
    EXPECT_TRUE(seen) << preset;
  }
}

}  // namespace
}  // namespace strata
