#include "dist/buckets.h"

#include <algorithm>

#include "core/error.h"

namespace vlmc::dist {

std::vector<Bucket> plan_buckets(const std::vector<int64_t>& numels, int64_t capacity) {
  VLMC_CHECK(capacity > 0, "plan_buckets: capacity must be positive, got ", capacity);
  std::vector<Bucket> buckets;
  Bucket current;
  for (size_t i = 0; i < numels.size(); ++i) {
    VLMC_CHECK(numels[i] >= 0, "plan_buckets: tensor ", i, " has ", numels[i], " elements");
    int64_t offset = 0;
    while (offset < numels[i]) {
      const int64_t take = std::min(numels[i] - offset, capacity - current.count);
      current.pieces.push_back({i, offset, take});
      current.count += take;
      offset += take;
      if (current.count == capacity) {
        buckets.push_back(std::move(current));
        current = Bucket{};
      }
    }
  }
  if (current.count > 0) buckets.push_back(std::move(current));
  return buckets;
}

std::vector<Bucket> plan_f32_buckets(const std::vector<Tensor>& tensors, Device device, const std::string& what,
                                     const std::string& backend, const std::string& device_hint) {
  std::vector<int64_t> numels;
  numels.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    VLMC_CHECK(t.device() == device, "all_reduce_sum (", what, "): tensor ", i, " is on ", t.device().str(),
               ", but the ", backend, " process group sums tensors on ", device.str(), device_hint);
    VLMC_CHECK(t.dtype() == DType::f32, "all_reduce_sum (", what, "): tensor ", i, " is ",
               dtype_name(t.dtype()), ", expected f32");
    VLMC_CHECK(t.is_contiguous(), "all_reduce_sum (", what, "): tensor ", i, " is not contiguous");
    numels.push_back(t.numel());
  }
  return plan_buckets(numels, kBucketBytes / static_cast<int64_t>(sizeof(float)));
}

}  // namespace vlmc::dist
