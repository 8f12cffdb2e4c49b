// TensorBoard event files (runs/<name>/tb/events.out.tfevents.*), written and
// read without TensorFlow: just the scalar summaries a training run logs.
//
// An events file is a sequence of TFRecords, each
//   uint64 length (little-endian) | uint32 masked CRC32C of those 8 bytes |
//   data (length bytes)           | uint32 masked CRC32C of the data
// and each record's data is one serialised tensorflow.Event protobuf. The
// first carries file_version "brain.Event:2", the second a SessionLog START
// (below); every scalar after them is Event{wall_time = 1, step = 2,
// summary = 5 {value = 1 {tag = 1, simple_value = 2}}}. The protobuf encoding is done by hand here: varints,
// little-endian fixed-width numbers and length-prefixed bytes.
//
// TensorBoard reads every events file of a directory, in name order, as one
// run. Each file here starts with a SessionLog START event at the step the
// run (re)starts from; on every START after the first, TensorBoard drops the
// points at steps >= that step read so far, so a run resumed from a
// checkpoint at step S hides what the earlier run logged past S.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace vlmc::train {

class TensorBoardWriter {
 public:
  // Creates `dir` if missing and a new file in it named
  // events.out.tfevents.<unix seconds, 10 digits>.<hostname>, with ".1", ".2",
  // ... appended when that name is taken (a second writer in the same second,
  // e.g. a quick resume), so an existing file is never appended to or
  // overwritten. Writes the file_version event, then Event{step = start_step,
  // session_log = 7 {status = START}}: pass the step a resumed run continues
  // from. Errors name the path.
  explicit TensorBoardWriter(const std::string& dir, int64_t start_step = 0);

  // One Event with one scalar Summary.Value. The value is stored as a float
  // (simple_value), as TensorBoard does; the record is flushed right away, so
  // a crash loses at most the record being written.
  void add_scalar(const std::string& tag, int64_t step, double value, double wall_time = now());
  void flush();

  const std::string& path() const { return path_; }

  // Seconds since the Unix epoch, as a double (Event.wall_time).
  static double now();

 private:
  void write_record(std::string_view data);

  struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::string path_;
  std::unique_ptr<std::FILE, FileCloser> file_;
};

struct ScalarEvent {
  std::string tag;
  int64_t step;
  double wall_time;
  float value;
};

// Every scalar of an events file, in file order. Both CRCs of every record are
// checked; a bad CRC, a truncated record or an Event that is not valid
// protobuf throws vlmc::Error naming the file and the record's byte offset.
// Events without scalars (file_version, graphs, histograms, images) are
// skipped. A scalar is a Summary.Value's simple_value, or its tensor when that
// is a rank-0 DT_FLOAT TensorProto (float_val, packed or not, or 4 bytes of
// tensor_content), the form newer TensorBoard and PyTorch writers use.
std::vector<ScalarEvent> read_tensorboard_scalars(const std::string& path);

// The paths of the events.out.tfevents.* files directly in `dir`, sorted by
// name (the order TensorBoard reads them in). Throws when dir cannot be listed.
std::vector<std::string> tensorboard_event_files(const std::string& dir);

// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses it
// before masking. crc32c("123456789") == 0xE3069283.
uint32_t crc32c(std::string_view bytes);

}  // namespace vlmc::train
