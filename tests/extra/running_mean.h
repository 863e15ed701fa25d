// A mixer defined outside the engine, to prove its seams: registered at run
// time, with an option of its own in config.json, it goes through init,
// info, train, generate, state snapshots and conversion like a built-in one
// (docs/architecture.md, "Adding a mixer", walks through this file).
#pragma once

namespace strata::test {

// Registers kind "running-mean" (once; later calls do nothing):
//   m_t = (x_0 + ... + x_t) / (t + 1),   y_t = sigmoid(gate) ⊙ (m_t Wᵀ)
// parameters gate [D] (initialised to the option gate_init) and proj.weight
// [D, D]; decode state: the running sum and the count.
void register_running_mean();

}  // namespace strata::test
