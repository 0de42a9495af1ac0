// FASTATTR_CLONES: compile a function for AVX-512, AVX2 and the baseline and pick one at load
// time (GCC target_clones; the portable build's baseline is SSE2). Used on the float32 loops that
// run over whole chunks of gradients (csrc/path_accumulate.cpp, csrc/host_checks.cpp).
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FASTATTR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTATTR_CLONES
#endif
