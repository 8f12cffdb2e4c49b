// The loader that feeds LLaVA training steps (docs/llava_data.md, "The loader"): worker
// threads read and decode each sample's images, run CLIP's preprocessing, tokenize and mask the
// conversation (preprocess_conversation) and collate padded batches ahead of the step, while
// the step runs; the consumer gets the batches in one deterministic order whatever thread
// finished first.
//
//   order     per epoch a seeded permutation (or LLaVA's group_by_modality_length), reshuffled
//             each epoch; process `rank` of `world_size` reads the blocks of batch_size /
//             world_size positions k with k % world_size == rank (sample_order.h), so that its
//             batch of step s is its contiguous share of the global batch s;
//   batches   the next batch_size / world_size good samples of this process's share, read as
//             one endless stream over the epochs (an epoch's last samples are batched with the
//             next epoch's first: nothing is dropped). A bad sample (missing or undecodable
//             image, a conversation the template refuses) is skipped, counted and named, and
//             its place is taken by the next sample of the same process: the samples of the
//             other processes never move, and the same data and seed always give the same
//             batches. With strict, the first bad sample in that order is an error (naming
//             the sample's id, its place in the file, the image file and the reason) thrown by
//             next() at the batch it would have been in, after every batch before it;
//   resume    LoaderState (after any batch) is where this process is in that stream; a loader
//             made with options.resume = state gives exactly the batches that followed.
//
// Threads: `workers` std::threads (0: everything on the caller's thread, in next()), at most
// `prefetch` batches ready or being decoded ahead of the consumer. Worker code is single-
// threaded (no OpenMP: decode, resize and tokenize are plain loops), so a process uses the
// OpenMP pool of --threads for the step plus `workers` loader threads. Nothing a worker does
// throws out of its thread; the destructor stops and joins them, also when the consumer stops
// early.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/tensor.h"
#include "data/clip_image_processor.h"
#include "data/conversation.h"
#include "data/llava_dataset.h"
#include "data/sentencepiece_tokenizer.h"

namespace vlmc::data {

// Where one process is in its stream of samples: what the trainer saves in state.json (one per
// process in a data-parallel job: the places differ once a process has skipped a sample).
struct LoaderState {
  int64_t step = 0;     // batches this process has taken, over all epochs
  int64_t epoch = 0;    // the epoch of the next sample it reads
  int64_t cursor = 0;   // that sample's place in this process's share of the epoch's order
  int64_t skipped = 0;  // bad samples skipped so far (carried over a resume for the report)
  bool operator==(const LoaderState&) const = default;
};

struct LlavaLoaderOptions {
  // The global batch of one step, all processes together; each process takes
  // batch_size / world_size samples (it must divide).
  int64_t batch_size = 1;
  int world_size = 1;
  int rank = 0;
  // Micro-steps per optimizer step: group_by_modality_length's megabatch is batch_size *
  // accumulation samples, as LLaVA passes world_size * gradient_accumulation_steps.
  int64_t accumulation = 1;
  uint64_t seed = 0;
  // next() gives floor(epochs * samples / batch_size) batches in all, then nothing.
  int64_t epochs = 1;
  int workers = 0;   // decoding threads; 0: on the caller's thread
  int prefetch = 2;  // batches ready or in the making ahead of the consumer, >= 1
  bool strict = false;
  bool group_by_modality_length = false;
  // model_max_length, the pad id of LLaVA's mismatch rule, tokenizers >= 0.14.
  PreprocessOptions preprocess;
  // The id input_ids are padded with: -1 takes preprocess.pad_id, and when that is -1 too the
  // tokenizer's unk id, as LLaVA-1.5's train() sets pad_token = unk_token.
  int64_t pad_id = -1;
  // Where to start: a state from a batch of an earlier loader with the same data and options.
  LoaderState resume;
};

// A sample that was skipped: its id, the image file (empty when the conversation was the
// problem) and why.
struct SkippedSample {
  std::string id;
  std::string file;
  std::string reason;
};

struct LlavaBatch {
  Tensor input_ids;       // i64 [B, T]: -200 at each image, right-padded with the pad id
  Tensor labels;          // i64 [B, T]: -100 where masked and on padding
  Tensor attention_mask;  // i64 [B, T]: 1 on the sample's tokens, 0 on padding
  // f32 [num_images, 3, H, W]: one image per -200 placeholder, in order across the batch
  // (what LlavaModel::prepare_inputs takes); undefined when the batch has no image.
  Tensor pixel_values;
  std::vector<std::string> ids;         // the samples, in batch order
  std::vector<int64_t> images;          // images of each sample
  int64_t text_tokens = 0;              // real tokens, the -200 placeholders not counted
  int64_t epoch = 0;                    // the epoch of the batch's first sample
  LoaderState state;                    // after this batch: resume from here
  std::vector<SkippedSample> skipped;   // bad samples passed over to make this batch
  PreprocessCounters preprocess;        // what preprocessing did to its samples
};

// What the batches taken so far cost and met: the count the run reports in results.json.
struct LoaderStats {
  static constexpr size_t kNamed = 5;  // skipped samples kept by name
  int64_t batches = 0;
  int64_t samples = 0;  // samples in those batches
  int64_t skipped = 0;  // since this loader started (LoaderState::skipped adds earlier ones)
  std::vector<SkippedSample> first_skipped;
  PreprocessCounters preprocess;
  double wait_seconds = 0;  // time next() spent waiting for a batch
  // One line for the log: batches, samples, skipped (the first named), the preprocessing
  // counts and the wait.
  std::string summary() const;
};

class LlavaLoader {
 public:
  // dataset, tokenizer, conv and processor must outlive the loader (workers read them).
  // Throws vlmc::Error naming the option that is wrong (batch not divisible by the processes,
  // fewer samples than a batch, a resume state outside the data, ...).
  LlavaLoader(const LlavaDataset& dataset, const SentencePieceTokenizer& tokenizer, const ConversationTemplate& conv,
              const CLIPImageProcessor& processor, LlavaLoaderOptions options);
  ~LlavaLoader();
  LlavaLoader(const LlavaLoader&) = delete;
  LlavaLoader& operator=(const LlavaLoader&) = delete;

  // The next batch, or nothing once total_steps() batches were taken. With strict, a bad
  // sample throws vlmc::Error here (and at every later call).
  std::optional<LlavaBatch> next();

  // floor(epochs * samples / batch_size), counted from step 0 (a resumed loader ends there too).
  int64_t total_steps() const { return total_steps_; }
  int64_t per_process_batch() const { return batch_; }
  // After the last batch next() returned (options.resume before the first).
  const LoaderState& state() const { return state_; }
  const LoaderStats& stats() const { return stats_; }
  // Samples of one epoch's order this process reads.
  int64_t share_size() const { return static_cast<int64_t>(share_.size()); }

 private:
  struct Result;
  struct Ready;

  Result process(int64_t seq) const;
  std::shared_ptr<const std::vector<int64_t>> epoch_order(int64_t epoch) const;
  LoaderState place(int64_t seq) const;
  bool can_claim() const;  // under mutex_
  void store(int64_t seq, Result result);  // under mutex_ (lock held by `lock`)
  void assemble(std::unique_lock<std::mutex>& lock);
  LlavaBatch collate(std::vector<Result>& samples) const;
  void worker_loop();

  const LlavaDataset& dataset_;
  const SentencePieceTokenizer& tokenizer_;
  const ConversationTemplate& conv_;
  const CLIPImageProcessor& processor_;
  LlavaLoaderOptions options_;
  int64_t batch_ = 1;  // per process
  int64_t total_steps_ = 0;
  int64_t pad_id_ = 0;
  std::vector<int64_t> share_;           // positions of an epoch's order this process reads
  std::vector<int64_t> modality_length_;  // group_by_modality_length: LLaVA's modality_lengths

  mutable std::mutex order_mutex_;
  mutable std::map<int64_t, std::shared_ptr<const std::vector<int64_t>>> orders_;

  // The pipeline; sequence numbers count samples of this process's stream from options.resume.
  std::mutex mutex_;
  std::condition_variable work_cv_, ready_cv_;
  int64_t next_claim_ = 0;     // the next sample a worker takes
  int64_t assemble_from_ = 0;  // the first sample not yet in a batch
  int64_t known_bad_ = 0;      // bad results at or after assemble_from_
  int64_t bad_run_ = 0;        // bad samples in a row, in stream order
  int64_t assembled_ = 0;      // batches made (or failed)
  int64_t delivered_ = 0;      // batches next() returned
  bool assembling_ = false;
  bool failed_ = false;        // a batch ended in an error: no more work
  bool stop_ = false;
  std::map<int64_t, Result> results_;
  std::map<int64_t, Ready> ready_;
  std::vector<std::thread> threads_;

  LoaderState state_;
  LoaderStats stats_;
  std::string error_;  // the error next() threw, thrown again by later calls
};

// LLaVA's modality_lengths of sample i: the words (runs of non-whitespace) of every turn
// summed, positive with an image, negative without (at least 1 word: LLaVA asserts on 0).
int64_t modality_length(const LlavaDataset& dataset, size_t i);

}  // namespace vlmc::data
