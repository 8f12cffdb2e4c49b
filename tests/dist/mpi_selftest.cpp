// Run under mpirun with 2 (or more) processes by ctest (label "mpi"); not a
// Catch2 suite because every rank must run the same collectives in the same
// order, and the failure mode under test ends the whole job.
//
//   mpi_selftest          sums of many tensor sizes (across bucket boundaries,
//                         more than one bucket in total) are exact and the very
//                         same bits on every rank; scalars; barrier; then the
//                         Reducer (dist/reducer.h) over small buckets, with
//                         gradients ready in another order on each rank;
//                         then broadcasts from alternating owners (ZeRO-1).
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
#include "dist/reducer.h"

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

// The Reducer over 10 parameters in 9 buckets of 1024 floats (the larger
// parameters span buckets). Rank 0 makes gradients ready first to last, the
// other ranks last to first (the order a backward would), so buckets complete
// in another order on each rank. Parameter 1 has no gradient on any rank (it
// must keep none); parameter 0 has one on the last rank only (every rank must
// get it); parameter 2's gradient is set on every rank but never reported
// ready on rank 0 (an earlier micro-batch's gradient: still summed). Two
// steps, to check that prepare() resets the reducer.
int run_reducer(ProcessGroup& group) {
  const int rank = group.rank();
  const int size = group.world_size();
  const std::vector<int64_t> sizes = {5, 300, 1, 4000, 17, 2500, 64, 1000, 3, 777};
  std::vector<Tensor> params;
  for (const int64_t n : sizes) params.push_back(Tensor::zeros({n}, DType::f32));
  Reducer reducer(group, params, 1024 * sizeof(float));
  auto grad_value = [](int r, size_t t, int64_t i, int step) { return value(r, t + 20, i) * (step + 1); };
  auto has_grad = [&](int r, size_t t) { return t != 1 && (t != 0 || r == size - 1); };
  for (int step = 0; step < 2; ++step) {
    for (size_t t = 0; t < params.size(); ++t) {
      params[t].set_grad(Tensor());
      if (!has_grad(rank, t)) continue;
      Tensor g = Tensor::empty({sizes[t]}, DType::f32);
      float* p = static_cast<float*>(g.data_ptr());
      for (int64_t i = 0; i < sizes[t]; ++i) p[i] = grad_value(rank, t, i, step);
      params[t].set_grad(g);
    }
    reducer.prepare("selftest reducer step " + std::to_string(step + 1));
    for (size_t k = 0; k < params.size(); ++k) {
      const size_t t = rank == 0 ? k : params.size() - 1 - k;
      if (!has_grad(rank, t) || (rank == 0 && t == 2)) continue;
      reducer.on_ready(params[t]);
    }
    const Reducer::Stats before = reducer.stats();
    reducer.finish();
    const Reducer::Stats& stats = reducer.stats();
    const std::string at = "reducer step " + std::to_string(step + 1) + ": ";
    expect(stats.buckets == 9, rank, at + "9 buckets, got " + std::to_string(stats.buckets));
    // The last bucket holds parameters 0-2: it waits for finish(); the others start during the "backward".
    expect(before.started_in_backward == 8 && before.started_in_finish == 0, rank,
           at + "8 buckets started before finish, got " + std::to_string(before.started_in_backward));
    expect(stats.started_in_backward == 8 && stats.started_in_finish == 1, rank,
           at + "1 bucket started in finish, got " + std::to_string(stats.started_in_finish));

    for (size_t t = 0; t < params.size(); ++t) {
      const Tensor g = params[t].grad();
      bool any = false;
      for (int r = 0; r < size; ++r) any = any || has_grad(r, t);
      if (!any) {
        expect(!g.defined(), rank, at + "parameter " + std::to_string(t) + " got a gradient no rank had");
        continue;
      }
      expect(g.defined(), rank, at + "parameter " + std::to_string(t) + " has no gradient");
      if (!g.defined()) continue;
      const float* p = static_cast<const float*>(g.data_ptr());
      int64_t wrong = 0;
      for (int64_t i = 0; i < sizes[t]; ++i) {
        float want = 0;
        for (int r = 0; r < size; ++r)
          if (has_grad(r, t)) want += grad_value(r, t, i, step);
        if (p[i] != want) ++wrong;
      }
      expect(wrong == 0, rank, at + "parameter " + std::to_string(t) + " has " + std::to_string(wrong) + " wrong sums");
    }
    std::vector<Tensor> grads;
    for (const Tensor& p : params)
      if (p.grad().defined()) grads.push_back(p.grad());
    const uint64_t fp = fingerprint(grads);
    std::vector<double> mine = {static_cast<double>(fp >> 40), static_cast<double>((fp >> 20) & 0xFFFFF),
                                static_cast<double>(fp & 0xFFFFF)};
    const std::vector<double> sums = group.all_reduce_sum(mine, "selftest reducer fingerprints");
    for (size_t k = 0; k < mine.size(); ++k)
      expect(sums[k] == mine[k] * size, rank, at + "the summed bits differ between ranks");
  }
  std::printf("mpi_selftest rank %d/%d: reducer over %zu parameters, %s\n", rank, size, params.size(),
              failures == 0 ? "ok" : "FAILED");
  return failures == 0 ? 0 : 1;
}

// ZeRO stage 1's broadcast: tensors of odd sizes (an empty one, one over a
// bucket) owned by the ranks in turn, each rank starting from its own values;
// afterwards tensor t holds its owner's values, the same bits on every rank.
int run_broadcast(ProcessGroup& group) {
  const int rank = group.rank();
  const int size = group.world_size();
  const int64_t bucket = kBucketBytes / 4;
  const std::vector<int64_t> sizes = {1, 0, 3, 1001, 77777, bucket + 5, 12345, 2, 999};
  std::vector<Tensor> tensors;
  std::vector<int> owners;
  for (size_t t = 0; t < sizes.size(); ++t) {
    Tensor x = Tensor::empty({sizes[t]}, DType::f32);
    float* p = static_cast<float*>(x.data_ptr());
    for (int64_t i = 0; i < sizes[t]; ++i) p[i] = value(rank, t + 40, i) + std::sin(static_cast<float>(i)) * 1e-3f;
    tensors.push_back(x);
    owners.push_back(static_cast<int>(t) % size);
  }
  const auto start = std::chrono::steady_clock::now();
  group.broadcast(tensors, owners, "selftest broadcast");
  group.broadcast({}, {}, "selftest empty broadcast");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (size_t t = 0; t < sizes.size(); ++t) {
    const float* p = static_cast<const float*>(tensors[t].data_ptr());
    int64_t wrong = 0;
    for (int64_t i = 0; i < sizes[t]; ++i)
      if (p[i] != value(owners[t], t + 40, i) + std::sin(static_cast<float>(i)) * 1e-3f) ++wrong;
    expect(wrong == 0, rank, "broadcast tensor " + std::to_string(t) + " (owner " + std::to_string(owners[t]) +
                                 ") has " + std::to_string(wrong) + " values not its owner's");
  }
  const uint64_t fp = fingerprint(tensors);
  std::vector<double> mine = {static_cast<double>(fp >> 40), static_cast<double>((fp >> 20) & 0xFFFFF),
                              static_cast<double>(fp & 0xFFFFF)};
  const std::vector<double> sums = group.all_reduce_sum(mine, "selftest broadcast fingerprints");
  for (size_t k = 0; k < mine.size(); ++k)
    expect(sums[k] == mine[k] * size, rank, "the broadcast bits differ between ranks");
  std::printf("mpi_selftest rank %d/%d: broadcast of %zu tensors in %.3f s, %s\n", rank, size, tensors.size(),
              seconds, failures == 0 ? "ok" : "FAILED");
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
  if (hang) return run_hang(*group);
  const int sums = run_sums(*group);
  const int reducer = run_reducer(*group);
  return run_broadcast(*group) != 0 || reducer != 0 || sums != 0 ? 1 : 0;
}
