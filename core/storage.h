// A block of memory on one device, shared by every tensor that views it.
#pragma once

#include <cstddef>
#include <memory>

#include "core/device.h"

namespace vlmc {

class Storage {
 public:
  // Host memory is 64-byte aligned; CUDA memory comes from the caching allocator.
  static std::shared_ptr<Storage> allocate(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  Storage(void* data, size_t nbytes, Device device) : data_(data), nbytes_(nbytes), device_(device) {}
  void* data_;
  size_t nbytes_;
  Device device_;
};

}  // namespace vlmc
