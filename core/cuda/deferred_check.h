// Deferred index checks on CUDA: an op's kernel reports a bad index into a
// record of a few i64 slots, and the op returns without waiting for the GPU;
// the record is read at the next host wait (synchronize(), a device-to-host
// copy, any other wait: see check_deferred_errors), which throws the op's own
// message if the kernel flagged an error.
//
// Why: reading a device flag back inside every indexing op made a training
// step wait for the GPU several times (docs/cuda.md); with deferred checks the
// only waits are the reads the caller asks for (the loss, the gradient norm).
// The kernels never read or write through a bad index (they write zeros or
// skip it), so running on after one is safe until the report.
//
// The records live in device memory (so the kernels' atomics are ordinary
// device atomics): the op's initial slots go there by an async copy from a
// pinned mirror queued before its kernel, and the pending records come back
// in one copy when the stream has been synchronised. A record is reused only
// once it has been checked; when all of a device's records are pending, taking
// one more synchronises the stream first (the only wait this adds; a step
// never takes that many).
//
// The header names no CUDA types; a CPU-only build links a counterpart in
// which defer_check throws and check_deferred_errors does nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>

namespace vlmc::cuda {

constexpr int kDeferredSlots = 4;          // i64 slots per record
constexpr size_t kDeferredRecords = 4096;  // records per device

// Builds the error message from a finished record's slots, or returns "" when
// they say that nothing went wrong. Captures what it names (shapes, bounds) as
// values: it runs after the op has returned.
using DeferredReport = std::function<std::string(const int64_t* slots)>;

// Takes a record on `device`, sets its first slots to `initial` (the rest to 0)
// and registers `report` for it; returns the slots' device address for the
// kernel to write. Never waits unless every record is pending.
int64_t* defer_check(int device, std::initializer_list<int64_t> initial, DeferredReport report);

// Reads every pending record of `device` and forgets them all; throws
// vlmc::Error with the first (oldest) error's message, followed by
// " (reported at the next synchronisation)". Every host wait calls it:
// runtime.cpp's synchronize() and copies, and the waits on an event (the
// staging ring, the NCCL group, the benchmark harness). It reads the records
// behind every op queued on the device's stream, so it completes that stream
// when records are pending: no extra wait right after synchronising it, and
// none at all when nothing is pending.
void check_deferred_errors(int device);

// Records of `device` registered and not yet checked (for tests).
size_t pending_deferred_checks(int device);

}  // namespace vlmc::cuda
