// The backward's stage reports (Model::set_backward_hook, grad_stages), which
// data-parallel training relies on to reduce a layer's gradients while the
// backward of earlier layers runs: when stage s is reported, every parameter
// of stage s already holds its final gradient, for every kind of model.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "core/rng.h"
#include "strata/config.h"
#include "strata/model.h"

namespace strata {
namespace {

TEST(BackwardHook, EveryStageIsFinalWhenReported) {
  for (const char* preset : {"tiny", "tiny-tied", "tiny-samba", "tiny-modified", "tiny-sliding-gla", "tiny-mamba"}) {
    SCOPED_TRACE(preset);
    auto m = Model::random(preset_config(preset), 7, DType::F32);
    m->enable_training();
    const std::vector<int> stages = m->grad_stages();
    const auto grads = m->named_grads();
    ASSERT_EQ(stages.size(), grads.size());
    const int L = m->num_blocks();
    std::vector<int> reported;
    std::vector<std::vector<float>> at_report(grads.size());
    m->set_backward_hook([&](int s) {
      reported.push_back(s);
      for (size_t i = 0; i < grads.size(); ++i)
        if (stages[i] == s && grads[i].second.data)
          at_report[i].assign(grads[i].second.f32(), grads[i].second.f32() + grads[i].second.numel());
    });
    const int64_t B = 2, T = 12;
    std::vector<int32_t> in(B * T), tg(B * T);
    Rng r(3);
    for (size_t i = 0; i < in.size(); ++i) {
      in[i] = static_cast<int32_t>(r.next() % 512);
      tg[i] = static_cast<int32_t>(r.next() % 512);
    }
    m->zero_grads();
    m->train_batch(in.data(), tg.data(), B, T, 0.5f);
    // Reported once each, from the head down to the embeddings.
    std::vector<int> expected{L};
    for (int b = L - 1; b >= 0; --b) expected.push_back(b);
    expected.push_back(-1);
    EXPECT_EQ(reported, expected);
    int in_blocks = 0;
    for (size_t i = 0; i < grads.size(); ++i) {
      const std::string& name = grads[i].first;
      if (!grads[i].second.data) continue;  // a buffer
      ASSERT_EQ(at_report[i].size(), static_cast<size_t>(grads[i].second.numel())) << name << " never reported";
      EXPECT_EQ(std::memcmp(at_report[i].data(), grads[i].second.f32(), at_report[i].size() * sizeof(float)), 0)
          << name << " (stage " << stages[i] << ") changed after its stage was reported";
      if (stages[i] >= 0 && stages[i] < L) {
        EXPECT_EQ(name.rfind("model.layers.", 0), 0u) << name;
        ++in_blocks;
      }
    }
    EXPECT_GT(in_blocks, 0);
    // Without a hook nothing is reported.
    m->set_backward_hook(nullptr);
    reported.clear();
    m->train_batch(in.data(), tg.data(), B, T, 0.5f);
    EXPECT_TRUE(reported.empty());
  }
}

}  // namespace
}  // namespace strata
