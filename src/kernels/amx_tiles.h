// AMX tile configuration shared by the AMX kernels (included only by files
// compiled with the AMX flags; internal linkage, one copy per file).
#pragma once
#include <cstdint>

namespace strata::kernels {
namespace {

// The 64-byte LDTILECFG block: palette 1, rows and bytes per row of each tile.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved0[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Eight full tiles: 16 rows of 64 bytes.
inline TileConfig full_tiles() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) {
    c.rows[t] = 16;
    c.colsb[t] = 64;
  }
  return c;
}

}  // namespace
}  // namespace strata::kernels
