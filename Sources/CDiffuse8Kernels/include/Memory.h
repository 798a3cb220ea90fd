#ifndef DIFFUSE8_MEMORY_H
#define DIFFUSE8_MEMORY_H

#include <stddef.h>

/// glibc's allocator settings for a process that frees and re-allocates the same activation tensors on every model
/// call (`CPUMemoryRetention`): allocations below `mmap_threshold` bytes come from the heap, and a heap keeps up to
/// `trim_threshold` free bytes at its top instead of giving them back to the kernel (which makes the next call fault
/// every page in again). Returns 1 when both were set, 0 when not (another C library, or a value glibc refuses).
int d8_retain_freed_memory(size_t mmap_threshold, size_t trim_threshold);

#endif
