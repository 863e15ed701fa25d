// safetensors: 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
// then the data. Reading maps the file and returns views into it (a tensor whose
// offset is not aligned to its element size is copied). Every field is checked
// against the file size before use.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/weights.h"

namespace strata {

// Adds every tensor of `path` to `out` (a name already present is an error).
// Throws strata::Error naming the file and tensor/field on malformed input.
void read_safetensors(const std::string& path, WeightSet& out);

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Writes `tensors` in the given order; atomic (temp file, fsync, rename).
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// The whole file as bytes; errors name the path.
std::string read_file_text(const std::string& path);

// Writes `data` to `path` atomically (temp file in the same directory, fsync,
// rename, fsync of the directory).
void write_file_atomic(const std::string& path, const std::string& data);

}  // namespace strata
