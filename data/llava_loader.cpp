// The LLaVA loader's pipeline (see llava_loader.h). Samples are numbered in this process's
// stream (0 = the one at options.resume). Workers claim numbers in order, decode them in any
// order and leave the results in a map; whoever holds the "assembling" turn takes results in
// stream order, skipping bad ones, until a batch has its samples, collates it outside the lock
// and files it under its batch number; next() hands batches out by number. A worker claims a
// sample only while fewer than `prefetch` batches are ready or in the making, counting the
// samples in flight that are not known to be bad, so memory stays about prefetch batches.
#include "data/llava_loader.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/error.h"
#include "data/sample_order.h"

namespace vlmc::data {

struct LlavaLoader::Result {
  bool bad = false;
  size_t index = 0;  // in the dataset
  int64_t epoch = 0;
  std::string id, file, reason;
  PreprocessedSample pre;
  std::vector<Tensor> pixels;  // f32 [3, H, W] each, one per placeholder kept
};

struct LlavaLoader::Ready {
  std::optional<LlavaBatch> batch;
  std::string error;
};

namespace {

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

}  // namespace

int64_t modality_length(const LlavaDataset& dataset, size_t i) {
  int64_t words = 0;
  for (const LlavaTurn& turn : dataset.turns(i)) {
    bool in_word = false;
    for (const char c : turn.value) {
      const bool space = is_ascii_space(c);
      if (!space && !in_word) ++words;
      in_word = !space;
    }
  }
  words = std::max<int64_t>(words, 1);
  return dataset.num_images(i) > 0 ? words : -words;
}

std::string LoaderStats::summary() const {
  std::string out = str(batches, " batches, ", samples, " samples; ", skipped, " bad samples skipped");
  if (!first_skipped.empty()) {
    out += " (first:";
    for (size_t i = 0; i < first_skipped.size(); ++i) {
      const SkippedSample& s = first_skipped[i];
      out += str(i ? "; " : " ", s.id, s.file.empty() ? "" : " [" + s.file + "]", ": ", s.reason);
    }
    out += ")";
  }
  return out + str("; ", preprocess.summary(), "; waited ", wait_seconds, " s for data");
}

LlavaLoader::LlavaLoader(const LlavaDataset& dataset, const SentencePieceTokenizer& tokenizer,
                         const ConversationTemplate& conv, const CLIPImageProcessor& processor,
                         LlavaLoaderOptions options)
    : dataset_(dataset), tokenizer_(tokenizer), conv_(conv), processor_(processor), options_(std::move(options)) {
  const LlavaLoaderOptions& o = options_;
  VLMC_CHECK(o.world_size >= 1 && o.rank >= 0 && o.rank < o.world_size, "llava loader: process ", o.rank, " of ",
             o.world_size);
  VLMC_CHECK(o.batch_size >= 1 && o.batch_size % o.world_size == 0, "llava loader: batch_size ", o.batch_size,
             " does not split over the ", o.world_size, " processes (each takes batch_size / ", o.world_size, ")");
  VLMC_CHECK(o.accumulation >= 1, "llava loader: accumulation ", o.accumulation, " must be at least 1");
  VLMC_CHECK(o.epochs >= 1, "llava loader: epochs ", o.epochs, " must be at least 1");
  VLMC_CHECK(o.workers >= 0, "llava loader: data.workers ", o.workers, " must be 0 or more");
  VLMC_CHECK(o.prefetch >= 1, "llava loader: data.prefetch ", o.prefetch, " must be at least 1");
  const int64_t n = static_cast<int64_t>(dataset_.size());
  batch_ = o.batch_size / o.world_size;
  total_steps_ = o.epochs * n / o.batch_size;
  VLMC_CHECK(total_steps_ >= 1, "llava loader: ", dataset_.path(), " has ", n, " usable samples: ", o.epochs,
             " epochs of them make no global batch of ", o.batch_size);
  share_ = process_share(n, batch_, o.world_size, o.rank);
  VLMC_CHECK(!share_.empty(), "llava loader: process ", o.rank, " of ", o.world_size, " gets no sample of ", n);
  const LoaderState& r = o.resume;
  VLMC_CHECK(r.step >= 0 && r.step <= total_steps_ && r.epoch >= 0 && r.cursor >= 0 &&
                 r.cursor < static_cast<int64_t>(share_.size()) && r.skipped >= 0,
             "llava loader: resume state (step ", r.step, ", epoch ", r.epoch, ", cursor ", r.cursor, ", skipped ",
             r.skipped, ") is outside this data: ", total_steps_, " steps, ", share_.size(),
             " samples per epoch for this process");
  pad_id_ = o.pad_id >= 0 ? o.pad_id : o.preprocess.pad_id >= 0 ? o.preprocess.pad_id : tokenizer_.unk_id();
  VLMC_CHECK(pad_id_ >= 0, "llava loader: the tokenizer in ", tokenizer_.folder(),
             " has no unk token to pad with (LLaVA's pad_token = unk_token); set the pad id");
  if (o.group_by_modality_length) {
    modality_length_.resize(dataset_.size());
    for (size_t i = 0; i < dataset_.size(); ++i) modality_length_[i] = modality_length(dataset_, i);
  }
  state_ = r;
  for (int w = 0; w < o.workers; ++w) threads_.emplace_back([this] { worker_loop(); });
}

LlavaLoader::~LlavaLoader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

std::shared_ptr<const std::vector<int64_t>> LlavaLoader::epoch_order(int64_t epoch) const {
  std::lock_guard<std::mutex> lock(order_mutex_);
  auto it = orders_.find(epoch);
  if (it != orders_.end()) return it->second;
  const uint64_t stream = static_cast<uint64_t>(epoch);
  auto order = std::make_shared<const std::vector<int64_t>>(
      options_.group_by_modality_length
          ? modality_grouped_order(modality_length_, batch_, options_.world_size * options_.accumulation,
                                   options_.seed, stream)
          : seeded_permutation(static_cast<int64_t>(dataset_.size()), options_.seed, stream));
  // Workers are within a batch or two of each other: older epochs are not asked for again
  // (and would be computed anew, identically, if they were).
  orders_.erase(orders_.begin(), orders_.lower_bound(epoch - 1));
  orders_.emplace(epoch, order);
  return order;
}

LoaderState LlavaLoader::place(int64_t seq) const {
  const int64_t per_epoch = static_cast<int64_t>(share_.size());
  const int64_t at = options_.resume.cursor + seq;
  LoaderState s;
  s.epoch = options_.resume.epoch + at / per_epoch;
  s.cursor = at % per_epoch;
  return s;
}

LlavaLoader::Result LlavaLoader::process(int64_t seq) const {
  Result r;
  try {
    const LoaderState at = place(seq);
    r.epoch = at.epoch;
    r.index = static_cast<size_t>((*epoch_order(at.epoch))[static_cast<size_t>(share_[static_cast<size_t>(at.cursor)])]);
    r.id = std::string(dataset_.id(r.index));
    const size_t images = dataset_.num_images(r.index);
    try {
      r.pre = preprocess_conversation(tokenizer_, conv_, dataset_.turns(r.index), images, options_.preprocess);
    } catch (const std::exception& e) {
      r.bad = true;
      r.reason = e.what();
      return r;
    }
    // Placeholders cut off by model_max_length lose their images (the splice takes one image
    // per placeholder left); every image is still decoded, as LLaVA's __getitem__ does.
    const size_t kept = std::min<size_t>(
        images, static_cast<size_t>(std::count(r.pre.input_ids.begin(), r.pre.input_ids.end(), kImageTokenIndex)));
    for (size_t k = 0; k < images; ++k) {
      r.file = dataset_.image_path(r.index, k);
      Tensor pixels = processor_.preprocess(load_image(r.file));  // f32 [3, H, W]
      if (k < kept) r.pixels.push_back(std::move(pixels));
    }
    r.file.clear();
  } catch (const std::exception& e) {
    r.bad = true;
    r.reason = e.what();
    r.pixels.clear();
  } catch (...) {
    r.bad = true;
    r.reason = "an unknown exception";
    r.pixels.clear();
  }
  return r;
}

bool LlavaLoader::can_claim() const {
  if (stop_ || failed_ || options_.resume.step + assembled_ >= total_steps_) return false;
  const int64_t in_making = assembled_ - delivered_;
  if (in_making >= options_.prefetch) return false;
  const int64_t pending_good = next_claim_ - assemble_from_ - known_bad_;
  return pending_good < (options_.prefetch - in_making) * batch_;
}

void LlavaLoader::store(int64_t seq, Result result) {
  if (result.bad) ++known_bad_;
  results_.emplace(seq, std::move(result));
}

void LlavaLoader::assemble(std::unique_lock<std::mutex>& lock) {
  while (!assembling_ && !failed_ && options_.resume.step + assembled_ < total_steps_) {
    int64_t good = 0, run = bad_run_, end = assemble_from_;
    std::string error;
    for (; good < batch_; ++end) {
      const auto it = results_.find(end);
      if (it == results_.end()) break;
      const Result& r = it->second;
      if (!r.bad) {
        ++good;
        run = 0;
        continue;
      }
      const std::string what = str("sample '", r.id, "' (", dataset_.where(r.index), " of ", dataset_.path(), ")",
                                   r.file.empty() ? "" : " image " + r.file, ": ", r.reason);
      if (options_.strict) {
        error = str("llava loader (data.strict): ", what);
        break;
      }
      if (++run >= static_cast<int64_t>(share_.size())) {
        error = str("llava loader: ", run, " bad samples in a row, a whole epoch's share of process ", options_.rank,
                    "; the last: ", what);
        break;
      }
    }
    if (error.empty() && good < batch_) return;  // still decoding
    const int64_t number = assembled_++;
    if (!error.empty()) {
      failed_ = true;
      ready_[number].error = std::move(error);
      results_.clear();
      ready_cv_.notify_all();
      return;
    }
    std::vector<Result> taken;
    for (int64_t s = assemble_from_; s < end; ++s) {
      auto node = results_.extract(s);
      if (node.mapped().bad) --known_bad_;
      taken.push_back(std::move(node.mapped()));
    }
    assemble_from_ = end;
    bad_run_ = run;
    assembling_ = true;
    lock.unlock();
    Ready ready;
    try {
      ready.batch = collate(taken);
      LoaderState after = place(end);
      after.step = options_.resume.step + number + 1;
      ready.batch->state = after;
    } catch (const std::exception& e) {
      ready.error = str("llava loader: batch ", options_.resume.step + number, ": ", e.what());
    }
    lock.lock();
    assembling_ = false;
    if (!ready.error.empty()) failed_ = true;
    ready_[number] = std::move(ready);
    ready_cv_.notify_all();
    work_cv_.notify_all();
  }
}

LlavaBatch LlavaLoader::collate(std::vector<Result>& samples) const {
  LlavaBatch batch;
  std::vector<const Result*> good;
  for (Result& r : samples) {
    if (r.bad)
      batch.skipped.push_back({r.id, r.file, r.reason});
    else
      good.push_back(&r);
  }
  const int64_t B = static_cast<int64_t>(good.size());
  int64_t T = 0, num_images = 0;
  for (const Result* r : good) {
    T = std::max(T, static_cast<int64_t>(r->pre.input_ids.size()));
    num_images += static_cast<int64_t>(r->pixels.size());
  }
  batch.epoch = good.front()->epoch;
  std::vector<int64_t> ids(static_cast<size_t>(B * T), pad_id_), labels(ids.size(), kIgnoreIndex),
      mask(ids.size(), 0);
  for (int64_t b = 0; b < B; ++b) {
    const Result& r = *good[static_cast<size_t>(b)];
    const auto row = static_cast<size_t>(b * T);
    std::copy(r.pre.input_ids.begin(), r.pre.input_ids.end(), ids.begin() + static_cast<std::ptrdiff_t>(row));
    std::copy(r.pre.labels.begin(), r.pre.labels.end(), labels.begin() + static_cast<std::ptrdiff_t>(row));
    std::fill_n(mask.begin() + static_cast<std::ptrdiff_t>(row), r.pre.input_ids.size(), 1);
    batch.text_tokens += static_cast<int64_t>(r.pre.input_ids.size()) -
                         std::count(r.pre.input_ids.begin(), r.pre.input_ids.end(), kImageTokenIndex);
    batch.ids.push_back(r.id);
    batch.images.push_back(static_cast<int64_t>(r.pixels.size()));
    batch.preprocess.add(r.id, r.pre);
  }
  batch.input_ids = Tensor::from_vector(ids, {B, T});
  batch.labels = Tensor::from_vector(labels, {B, T});
  batch.attention_mask = Tensor::from_vector(mask, {B, T});
  if (num_images > 0) {
    const Tensor* first = nullptr;
    const Result* first_owner = nullptr;
    for (const Result* r : good)
      for (const Tensor& t : r->pixels) {
        if (!first) {
          first = &t;
          first_owner = r;
        }
        VLMC_CHECK(t.shape() == first->shape(), "an image of sample '", r->id, "' comes out ", describe(t),
                   ", one of sample '", first_owner->id, "' ", describe(*first),
                   ": a batch needs one image size (the processor's do_center_crop gives it)");
      }
    const Shape& s = first->shape();
    batch.pixel_values = Tensor::empty({num_images, s[0], s[1], s[2]});  // (num_images, 3, H, W)
    float* dst = batch.pixel_values.data<float>();
    for (const Result* r : good)
      for (const Tensor& t : r->pixels) {
        std::memcpy(dst, t.data<float>(), static_cast<size_t>(t.numel()) * sizeof(float));
        dst += t.numel();
      }
  }
  return batch;
}

void LlavaLoader::worker_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_cv_.wait(lock, [this] {
      return stop_ || failed_ || options_.resume.step + assembled_ >= total_steps_ || can_claim();
    });
    if (!can_claim()) return;  // stopped, failed or every batch made
    const int64_t seq = next_claim_++;
    lock.unlock();
    Result result = process(seq);  // catches everything a sample can throw
    lock.lock();
    store(seq, std::move(result));
    assemble(lock);
  }
}

std::optional<LlavaBatch> LlavaLoader::next() {
  if (!error_.empty()) throw Error(error_);
  if (options_.resume.step + delivered_ >= total_steps_) return std::nullopt;
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mutex_);
  if (threads_.empty()) {
    while (!ready_.count(delivered_)) {  // decode on this thread, in order
      const int64_t seq = next_claim_++;
      lock.unlock();
      Result result = process(seq);
      lock.lock();
      store(seq, std::move(result));
      assemble(lock);
    }
  } else {
    ready_cv_.wait(lock, [this] { return ready_.count(delivered_) > 0; });
  }
  Ready ready = std::move(ready_[delivered_]);
  ready_.erase(delivered_);
  ++delivered_;
  lock.unlock();
  work_cv_.notify_all();
  stats_.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!ready.error.empty()) {
    error_ = std::move(ready.error);
    throw Error(error_);
  }
  LlavaBatch& batch = *ready.batch;
  batch.state.skipped = state_.skipped + static_cast<int64_t>(batch.skipped.size());
  state_ = batch.state;
  ++stats_.batches;
  stats_.samples += static_cast<int64_t>(batch.ids.size());
  stats_.skipped += static_cast<int64_t>(batch.skipped.size());
  for (const SkippedSample& s : batch.skipped)
    if (stats_.first_skipped.size() < LoaderStats::kNamed) stats_.first_skipped.push_back(s);
  stats_.preprocess.merge(batch.preprocess);
  return std::move(ready.batch);
}

}  // namespace vlmc::data
