// How the collectives pack a list of tensors into buckets of bounded size.
//
// One collective per tensor would cost a latency per tensor (hundreds per
// step); one collective over everything would need a staging buffer as large
// as all gradients. Buckets are the middle way: the tensors, laid end to end
// in list order, are cut into consecutive pieces of at most `capacity`
// elements; a tensor larger than a bucket, or one that straddles a boundary,
// is split across buckets. Every rank computes the same plan from the same
// shapes, so the buckets line up across ranks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace vlmc::dist {

// 25 MB of f32 per bucket (as PyTorch DDP's default bucket size).
inline constexpr int64_t kBucketBytes = 25LL * 1024 * 1024;

struct BucketPiece {
  size_t tensor = 0;   // index in the list
  int64_t offset = 0;  // first element of the tensor in this piece
  int64_t count = 0;   // elements
};

struct Bucket {
  std::vector<BucketPiece> pieces;
  int64_t count = 0;  // elements in the bucket (sum of the pieces)
};

// Cuts tensors of numels[i] elements into buckets of at most `capacity`
// elements (capacity > 0). Empty tensors get no piece; no bucket is empty.
std::vector<Bucket> plan_buckets(const std::vector<int64_t>& numels, int64_t capacity);

// The buckets of kBucketBytes for an all_reduce_sum over `tensors`, after
// checking that each is f32, contiguous and on `device`; errors name the call
// (`what`), the tensor's index and the backend (e.g. "mpi", with the hint
// `device_hint` when a tensor is on another device).
std::vector<Bucket> plan_f32_buckets(const std::vector<Tensor>& tensors, Device device, const std::string& what,
                                     const std::string& backend, const std::string& device_hint);

}  // namespace vlmc::dist
