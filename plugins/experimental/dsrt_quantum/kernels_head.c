/* Shared helpers of the dsrt_quantum statevector kernels. */
#include <stdint.h>
#if defined(__BMI2__)
#include <immintrin.h>
static inline uint64_t qs_pext(uint64_t x, uint64_t mask) { return _pext_u64(x, mask); }
#else
static inline uint64_t qs_pext(uint64_t x, uint64_t mask) {
    uint64_t r = 0; int b = 0;
    while (mask) { uint64_t low = mask & (~mask + 1); if (x & low) r |= (uint64_t)1 << b; ++b; mask ^= low; }
    return r;
}
#endif
