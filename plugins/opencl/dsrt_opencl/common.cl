/* dsrt OpenCL common header: storage formats computed in fp32.
 * bfloat16 is stored as ushort, fp8 (e4m3fn, e5m2) as uchar; every conversion rounds to nearest even.
 * Overflow follows ml_dtypes: e4m3fn (no infinity) becomes NaN, e5m2 becomes infinity. */

inline float dsrt_bf16_to_f32(ushort b) { return as_float(((uint)b) << 16); }

inline ushort dsrt_f32_to_bf16(float f) {
    uint u = as_uint(f);
    if (isnan(f)) return (ushort)(((u >> 16) & 0x8000u) | 0x7FC0u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (ushort)(u >> 16);
}

/* Decode an fp8 byte with E exponent bits, M mantissa bits and exponent bias B. */
inline float dsrt_fp8_decode(uchar b, int E, int M, int B, int is_fn) {
    int sign = b >> 7;
    int e = (b >> M) & ((1 << E) - 1);
    int m = b & ((1 << M) - 1);
    float v;
    if (is_fn) {
        if (e == (1 << E) - 1 && m == (1 << M) - 1) return as_float(0x7FC00000u);
    } else if (e == (1 << E) - 1) {
        v = m ? as_float(0x7FC00000u) : INFINITY;
        return sign ? -v : v;
    }
    if (e == 0) v = ldexp((float)m, 1 - B - M);
    else v = ldexp((float)((1 << M) | m), e - B - M);
    return sign ? -v : v;
}

/* Encode fp32 to fp8; max_code is the largest finite code, over_code what overflow becomes. */
inline uchar dsrt_fp8_encode(float x, int M, int B, uint max_code, uint over_code, uint nan_code) {
    uint sign = (as_uint(x) >> 24) & 0x80u;
    if (isnan(x)) return (uchar)(nan_code | sign);
    float a = fabs(x);
    uint code;
    if (a < ldexp(1.0f, 1 - B)) {
        /* subnormal in the target: an integer multiple of the smallest step, rounded to even */
        code = (uint)rint(ldexp(a, B - 1 + M));
    } else if (isinf(a)) {
        code = over_code;
    } else {
        uint u = as_uint(a);
        int shift = 23 - M;
        u += ((1u << (shift - 1)) - 1u) + ((u >> shift) & 1u);
        code = (u >> shift) - ((uint)(127 - B) << M);
    }
    if (code > max_code) code = over_code;
    return (uchar)(code | sign);
}

inline float dsrt_e4m3_to_f32(uchar b) { return dsrt_fp8_decode(b, 4, 3, 7, 1); }
inline uchar dsrt_f32_to_e4m3(float f) { return dsrt_fp8_encode(f, 3, 7, 0x7Eu, 0x7Fu, 0x7Fu); }
inline float dsrt_e5m2_to_f32(uchar b) { return dsrt_fp8_decode(b, 5, 2, 15, 0); }
inline uchar dsrt_f32_to_e5m2(float f) { return dsrt_fp8_encode(f, 2, 15, 0x7Bu, 0x7Cu, 0x7Eu); }
