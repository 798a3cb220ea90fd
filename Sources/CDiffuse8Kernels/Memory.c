#include <stdlib.h>
#include <limits.h>
#include "Memory.h"

#if defined(__GLIBC__)
#include <malloc.h>

int d8_retain_freed_memory(size_t mmap_threshold, size_t trim_threshold) {
    if (mmap_threshold > INT_MAX || trim_threshold > INT_MAX) return 0;
    // Setting either one turns off glibc's own sliding thresholds, so both are set together.
    return mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, (int)trim_threshold) == 1;
}
#else
int d8_retain_freed_memory(size_t mmap_threshold, size_t trim_threshold) {
    (void)mmap_threshold;
    (void)trim_threshold;
    return 0;
}
#endif
