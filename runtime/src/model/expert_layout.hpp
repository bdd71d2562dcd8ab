#pragma once
// Where every expert's weights lie in the model file: all the expert cache needs to read an
// expert and view it as tensors, so it does not depend on Model.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace pmoe {

class Model;

/// One of an expert's matrices in one layer. Experts are stored back to back, so expert e's slice
/// starts at offset + e * bytes.
struct ExpertMatrixLayout {
  uint64_t offset = 0;  // file offset of expert 0's slice
  uint64_t bytes = 0;   // bytes of one expert's slice (and the stride between experts)
  uint32_t dtype = 0;
  int64_t ne0 = 0, ne1 = 0;  // the slice's shape
  uint64_t offset_of(uint32_t expert) const { return offset + uint64_t(expert) * bytes; }
};

struct ExpertLayout {
  std::string path;  // the model file
  uint32_t n_expert = 0, n_expert_used = 0;
  std::vector<std::array<ExpertMatrixLayout, 3>> layers;  // [layer][gate, up, down]
};

ExpertLayout expert_layout(const Model& model);

}  // namespace pmoe
