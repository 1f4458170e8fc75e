// Work cut into items that a few threads, and whoever joins, take from one shared cursor (the
// addon's Maglev fills and batch map updates). A caller that joins does the items no thread has
// reached yet instead of sleeping: on a busy machine the threads may not have run at all.
#pragma once
#include <atomic>
#include <cstddef>
#include <system_error>
#include <thread>
#include <vector>

namespace kelp {

class Crew {
 public:
  // Runs take(first, n) over [0, size), `step` items at a time, until no item is left.
  template <typename Take>
  void Drain(size_t size, size_t step, Take take) {
    for (;;) {
      size_t first = next_.fetch_add(step);
      if (first >= size) return;
      take(first, std::min(step, size - first));
    }
  }

  // Starts up to `threads` threads on `work`; one that cannot be started (EAGAIN at a process
  // limit) leaves its share to the others and to Join().
  template <typename Work>
  void Start(unsigned threads, Work work) {
    try {
      for (unsigned t = 0; t < threads; t++) pool_.emplace_back(work);
    } catch (const std::system_error&) {
    }
  }

  // Does what is left (`work`, on the calling thread), then waits for the threads.
  template <typename Work>
  void Join(Work work) {
    work();
    for (auto& t : pool_) t.join();
    pool_.clear();
  }

 private:
  std::atomic<size_t> next_{0};
  std::vector<std::thread> pool_;
};

}  // namespace kelp
