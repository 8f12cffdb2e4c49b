// Run under mpirun with 2 (or more) processes by ctest (label "mpi"); not a
// Catch2 suite because every rank must run the same collectives in the same
// order, and the failure mode under test ends the whole job.
//
//   mpi_selftest          sums of many tensor sizes (across bucket boundaries,
//                         more than one bucket in total) are exact and the very
//                         same bits on every rank; scalars; barrier.
//   mpi_selftest --hang   the last rank sleeps 10 s before a barrier that has a
//                         2 s timeout: rank 0 must end the job after ~2 s with
//                         "did not complete within" (ctest checks the message
//                         and that the job ends well before 60 s).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "dist/buckets.h"
#include "dist/process_group.h"

using namespace vlmc;
using namespace vlmc::dist;

namespace {

int failures = 0;

void expect(bool ok, int rank, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "mpi_selftest rank %d: FAILED: %s\n", rank, what.c_str());
    ++failures;
  }
}

// Rank r's value for element i of tensor t: small integers times a power of
// two, so every partial sum is exact in f32 and the expected total is known.
float value(int rank, size_t t, int64_t i) {
  return static_cast<float>(((i * 7 + static_cast<int64_t>(t) * 13 + rank * 5) % 97) - 48) * 0.25f;
}

// FNV-1a over the bits of all tensors: equal on every rank iff the bits are.
uint64_t fingerprint(const std::vector<Tensor>& tensors) {
  uint64_t h = 1469598103934665603ULL;
  for (const Tensor& t : tensors) {
    const auto* bytes = static_cast<const unsigned char*>(t.data_ptr());
    for (size_t k = 0; k < t.nbytes(); ++k) h = (h ^ bytes[k]) * 1099511628211ULL;
  }
  return h;
}

int run_sums(ProcessGroup& group) {
  const int rank = group.rank();
  const int size = group.world_size();
  const int64_t bucket = kBucketBytes / 4;
  // Tiny tensors, an empty one, sizes around a bucket, one larger than a bucket:
  // about 9.2 M floats (37 MB), so three buckets with pieces straddling them.
  const std::vector<int64_t> sizes = {1, 3, 0, 1000, bucket - 1004, 1, 2, bucket, bucket / 3, 77, 12345};
  std::vector<Tensor> tensors;
  for (size_t t = 0; t < sizes.size(); ++t) {
    Tensor x = Tensor::empty({sizes[t]}, DType::f32);
    float* p = static_cast<float*>(x.data_ptr());
    for (int64_t i = 0; i < sizes[t]; ++i) p[i] = value(rank, t, i);
    tensors.push_back(x);
  }
  // A second call with a non-exact sum (random-looking values): only the
  // "same bits on every rank" property can be checked, which is the point.
  Tensor noisy = Tensor::empty({bucket + 123}, DType::f32);
  float* q = static_cast<float*>(noisy.data_ptr());
  for (int64_t i = 0; i < noisy.numel(); ++i) q[i] = std::sin(static_cast<float>(i * (rank + 3))) * 1e3f;

  const auto start = std::chrono::steady_clock::now();
  group.all_reduce_sum(tensors, "selftest gradients");
  group.all_reduce_sum({noisy}, "selftest noisy gradients");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  for (size_t t = 0; t < sizes.size(); ++t) {
    const float* p = static_cast<const float*>(tensors[t].data_ptr());
    int64_t wrong = 0;
    for (int64_t i = 0; i < sizes[t]; ++i) {
      float want = 0;
      for (int r = 0; r < size; ++r) want += value(r, t, i);
      if (p[i] != want) ++wrong;
    }
    expect(wrong == 0, rank, "tensor " + std::to_string(t) + " has " + std::to_string(wrong) + " wrong sums");
  }

  // Every rank sends its fingerprints; the sums of (fingerprint - rank 0's)
  // being 0 means all equal (checked on rank 0 via the scalar all-reduce).
  const uint64_t fp = fingerprint(tensors) ^ (fingerprint({noisy}) * 31);
  std::vector<double> mine = {static_cast<double>(fp >> 40), static_cast<double>((fp >> 20) & 0xFFFFF),
                              static_cast<double>(fp & 0xFFFFF)};
  const std::vector<double> sums = group.all_reduce_sum(mine, "selftest fingerprints");
  for (size_t k = 0; k < mine.size(); ++k) {
    expect(sums[k] == mine[k] * size, rank, "the summed bits differ between ranks (part " + std::to_string(k) + ")");
  }

  const std::vector<double> scalars = group.all_reduce_sum(std::vector<double>{1.0, rank + 0.5, -2.0}, "selftest scalars");
  expect(scalars[0] == size, rank, "scalar sum of ones");
  expect(scalars[1] == size * (size - 1) / 2.0 + 0.5 * size, rank, "scalar sum of ranks");
  expect(scalars[2] == -2.0 * size, rank, "scalar sum of negatives");
  expect(group.all_reduce_sum(std::vector<double>{}, "selftest no scalars").empty(), rank, "no scalars");

  group.barrier("selftest barrier");
  size_t bytes = noisy.nbytes();
  for (const Tensor& t : tensors) bytes += t.nbytes();
  std::printf("mpi_selftest rank %d/%d (%s): sums of %.1f MB in %.3f s, %s\n", rank, size, group.backend().c_str(),
              static_cast<double>(bytes) / 1e6, seconds, failures == 0 ? "ok" : "FAILED");
  return failures == 0 ? 0 : 1;
}

int run_hang(ProcessGroup& group) {
  if (group.rank() == group.world_size() - 1) {
    std::this_thread::sleep_for(std::chrono::seconds(10));
  }
  group.barrier("selftest barrier after a 10 s sleep on the last rank");
  std::printf("mpi_selftest rank %d: the barrier completed, but the timeout should have ended the job\n",
              group.rank());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const bool hang = argc > 1 && std::strcmp(argv[1], "--hang") == 0;
  auto group = init_process_group(Device::cpu(), hang ? 2.0 : 60.0);
  if (group->world_size() < 2) {
    std::fprintf(stderr, "mpi_selftest: run me under mpirun -np 2 (got world size %d)\n", group->world_size());
    return 1;
  }
  return hang ? run_hang(*group) : run_sums(*group);
}
