#include "CVPNKitLinux.h"

#ifdef __linux__

#include <malloc.h>

int vpnkit_tune_malloc(int mmap_threshold, int trim_threshold) {
    int ok = 1;
    if (mallopt(M_MMAP_THRESHOLD, mmap_threshold) != 1) ok = 0;
    if (mallopt(M_TRIM_THRESHOLD, trim_threshold) != 1) ok = 0;
    return ok;
}

#endif  // __linux__
