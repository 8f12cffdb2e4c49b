// The order a training epoch visits a dataset in (docs/llava_data.md, "The loader"):
//   - a seeded permutation per epoch, the same on every platform (std::mt19937_64, whose
//     output the C++ standard fixes, with our own bounded draws: std::uniform_int_distribution
//     differs between standard libraries);
//   - or LLaVA's group_by_modality_length (llava_trainer.py's LengthGroupedSampler with
//     group_by_modality=True): global "megabatches" that are all-image or all-text, each
//     sorted by length and split into per-process batches of balanced total length, in a
//     random order, LLaVA's mixed leftover megabatch last;
// and each process's share of an epoch's order: the order cut into blocks of the per-process
// batch, block k going to process k % world_size (what accelerate's sharded batch sampler does
// with the batches of LLaVA's sampler), so that with no sample skipped the blocks of step s are
// the global batch s cut in world_size contiguous shares.
#pragma once

#include <cstdint>
#include <vector>

namespace vlmc::data {

// A bounded uniform draw and a shuffle from an explicitly seeded std::mt19937_64, identical on
// every platform. stream separates independent uses of one seed (the epoch, a sub-shuffle).
std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed, uint64_t stream);

// transformers' / LLaVA's get_length_grouped_indices: a permutation cut into megabatches of
// batch_size * world_size, each sorted by length (longest first, ties in permutation order)
// and split by split_to_even_chunks into world_size batches of balanced total length.
std::vector<int64_t> length_grouped_order(const std::vector<int64_t>& lengths, int64_t batch_size,
                                          int64_t world_size, uint64_t seed, uint64_t stream);

// LLaVA's split_to_even_chunks: `indices` (sorted longest first) dealt to num_chunks chunks,
// each index to the chunk with the least total length so far, a chunk closed once it holds
// len / num_chunks; when len is not a multiple of num_chunks, chunk c is indices[c::num_chunks].
std::vector<std::vector<int64_t>> split_to_even_chunks(const std::vector<int64_t>& indices,
                                                       const std::vector<int64_t>& lengths, int64_t num_chunks);

// LLaVA's get_modality_length_grouped_indices. lengths: > 0 for a sample with an image, < 0
// (minus the length) for a text-only one, never 0. Each modality is length-grouped on its
// own and cut into megabatches of batch_size * world_size; every full one of them is shuffled
// together, and LLaVA's "additional batch" (the last megabatch of each modality, joined and
// sorted by index, so it may mix the two) goes last. One modality only: length_grouped_order.
std::vector<int64_t> modality_grouped_order(const std::vector<int64_t>& lengths, int64_t batch_size,
                                            int64_t world_size, uint64_t seed, uint64_t stream);

// The positions of an epoch's order of n samples that process `rank` of `world_size` takes:
// blocks [k * batch, (k + 1) * batch) for every k with k % world_size == rank, in order.
std::vector<int64_t> process_share(int64_t n, int64_t batch, int64_t world_size, int64_t rank);

}  // namespace vlmc::data
