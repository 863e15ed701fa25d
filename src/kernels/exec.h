// How arithmetic runs for one model (or one test): the kernel table of an
// instruction set, the precision of the training products and the library of
// the F32 training GEMM. A model owns one (Model::exec) and hands it to every
// module call, so no module reads a process-wide setting; the process only
// supplies the defaults (STRATA_ISA, STRATA_GEMM) a new context starts from.
#pragma once
#include "core/cpu.h"

namespace strata {

namespace kernels {
struct Table;
}

namespace ops {
// Precision of the training products: F32, or BF16 operands with F32 sums on
// AMX tiles or AVX512-BF16 dot products (mixed precision; F32 where the CPU
// has neither).
enum class Precision { F32, BF16 };
// The F32 training GEMM: the own blocked one, or oneDNN's sgemm where built in.
enum class GemmBackend { Own, OneDnn };
}  // namespace ops

class Exec {
 public:
  // The process defaults: STRATA_ISA (else the best ISA of this CPU),
  // STRATA_GEMM (else oneDNN where built in), F32 products.
  static Exec defaults();
  explicit Exec(Isa isa, ops::Precision precision = ops::Precision::F32,
                ops::GemmBackend gemm = ops::GemmBackend::OneDnn);

  Isa isa() const { return isa_; }
  const kernels::Table& kernels() const { return *kt_; }
  ops::Precision precision() const { return precision_; }
  // True when products really run in BF16 (requested, and the table has BF16 products).
  bool bf16_products() const;
  // The backend in use: OneDnn only where built in and the ISA is not scalar.
  ops::GemmBackend gemm() const;

  // Copies with one setting changed (the ISA must be supported by this CPU).
  Exec with_isa(Isa isa) const;
  Exec with_precision(ops::Precision p) const;
  Exec with_gemm(ops::GemmBackend b) const;

 private:
  Isa isa_;
  const kernels::Table* kt_;
  ops::Precision precision_;
  ops::GemmBackend gemm_;
};

// Built with oneDNN, and usable with `isa` (not the scalar path).
bool onednn_available(Isa isa);

}  // namespace strata
