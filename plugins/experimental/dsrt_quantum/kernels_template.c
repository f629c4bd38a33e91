/* Statevector kernels for dsrt_quantum, instantiated once per precision by ckernels.py:
 * @T@ is the real type (double or float), @S@ the suffix (c128 or c64).
 * A state of n qubits is 2^n interleaved (re, im) pairs; qubit q is bit q of an index.
 * Dense gates come in as the transposed matrix split in two planes:
 * mat[j*K + i] = Re M[i][j], mat[K*K + j*K + i] = Im M[i][j], where local index bit (k-1-t)
 * addresses qubit q[t] (off[j] holds the precomputed byte-free element offsets). */

static inline int64_t ins0_@S@(int64_t g, const int64_t* sq, int k) {
    for (int t = 0; t < k; ++t) {
        const int64_t q = sq[t];
        g = ((g >> q) << (q + 1)) | (g & (((int64_t)1 << q) - 1));
    }
    return g;
}

#define DENSE_BODY_@S@(K, LOGK)                                                              \
    const int64_t ng = (int64_t)1 << (n - LOGK);                                            \
    const @T@* mr = mat; const @T@* mi = mat + (K) * (K);                                    \
    _Pragma("omp parallel for schedule(static) if(n >= 14)")                                \
    for (int64_t g = 0; g < ng; ++g) {                                                      \
        const int64_t base = ins0_@S@(g, sq, LOGK);                                         \
        @T@ vr[K], vi[K], orr[K], oi[K];                                                    \
        for (int j = 0; j < (K); ++j) {                                                     \
            const @T@* p = psi + 2 * (base + off[j]); vr[j] = p[0]; vi[j] = p[1];           \
        }                                                                                   \
        for (int i = 0; i < (K); ++i) { orr[i] = 0; oi[i] = 0; }                            \
        _Pragma("GCC unroll 1")                                                             \
        for (int j = 0; j < (K); ++j) {                                                     \
            const @T@ a = vr[j], b = vi[j];                                                 \
            const @T@* r = mr + j * (K); const @T@* m = mi + j * (K);                       \
            _Pragma("omp simd")                                                             \
            for (int i = 0; i < (K); ++i) { orr[i] += r[i] * a - m[i] * b;                  \
                                            oi[i] += r[i] * b + m[i] * a; }                 \
        }                                                                                   \
        for (int j = 0; j < (K); ++j) {                                                     \
            @T@* p = psi + 2 * (base + off[j]); p[0] = orr[j]; p[1] = oi[j];                \
        }                                                                                   \
    }


typedef @T@ qv_@S@ __attribute__((vector_size(64), aligned(sizeof(@T@)), may_alias));
typedef @T@ qw_@S@ __attribute__((vector_size(32), aligned(sizeof(@T@)), may_alias));
#define QVL_@S@ ((int)(64 / sizeof(@T@)))

/* K >= QVL: the rows of each column of M live in NV = K / QVL vector registers, so the
 * accumulators of a whole group stay in registers (64 bytes = 8 doubles or 16 floats). */
#define DENSE_VEC_@S@(K, LOGK, NV, VT)                                                           \
    const int64_t ng = (int64_t)1 << (n - LOGK);                                            \
    const @T@* mr = mat; const @T@* mi = mat + (K) * (K);                                    \
    _Pragma("omp parallel for schedule(static) if(n >= 14)")                                \
    for (int64_t g = 0; g < ng; ++g) {                                                      \
        const int64_t base = ins0_@S@(g, sq, LOGK);                                         \
        @T@ vr[K], vi[K];                                                                   \
        for (int j = 0; j < (K); ++j) {                                                     \
            const @T@* p = psi + 2 * (base + off[j]); vr[j] = p[0]; vi[j] = p[1];           \
        }                                                                                   \
        VT ar[NV], ai[NV];                                                              \
        _Pragma("GCC unroll 8")                                                             \
        for (int v = 0; v < (NV); ++v) { ar[v] = (VT){0}; ai[v] = (VT){0}; }        \
        for (int j = 0; j < (K); ++j) {                                                     \
            const @T@ a = vr[j], b = vi[j];                                                 \
            const VT* r = (const VT*)(mr + j * (K));                                \
            const VT* m = (const VT*)(mi + j * (K));                                \
            _Pragma("GCC unroll 8")                                                         \
            for (int v = 0; v < (NV); ++v) { ar[v] += r[v] * a - m[v] * b;                  \
                                             ai[v] += r[v] * b + m[v] * a; }                \
        }                                                                                   \
        const @T@* orr = (const @T@*)ar; const @T@* oi = (const @T@*)ai;                    \
        for (int j = 0; j < (K); ++j) {                                                     \
            @T@* p = psi + 2 * (base + off[j]); p[0] = orr[j]; p[1] = oi[j];                \
        }                                                                                   \
    }

#define DENSE_ANY_@S@(K, LOGK)                                                               \
    if ((K) >= QVL_@S@) { DENSE_VEC_@S@(K, LOGK, ((K) >= QVL_@S@ ? (K) / QVL_@S@ : 1), qv_@S@) }     \
    else if (2 * (K) >= QVL_@S@) { DENSE_VEC_@S@(K, LOGK, 1, qw_@S@) }                       \
    else { DENSE_BODY_@S@(K, LOGK) }

static void dense1_@S@(@T@* restrict psi, int64_t n, int64_t q, const @T@* restrict mat) {
    const int64_t ng = (int64_t)1 << (n - 1);
    const int64_t stride = (int64_t)1 << q;
    const @T@ ar = mat[0], br = mat[1], cr = mat[2], dr = mat[3];
    const @T@ ai = mat[4], bi = mat[5], ci = mat[6], di = mat[7];
    /* transposed planes: a = M00, b = M10, c = M01, d = M11 */
    #pragma omp parallel for schedule(static) if(n >= 14)
    for (int64_t g = 0; g < ng; ++g) {
        const int64_t i0 = ((g >> q) << (q + 1)) | (g & (stride - 1));
        @T@* p0 = psi + 2 * i0; @T@* p1 = psi + 2 * (i0 + stride);
        const @T@ x0r = p0[0], x0i = p0[1], x1r = p1[0], x1i = p1[1];
        p0[0] = ar * x0r - ai * x0i + cr * x1r - ci * x1i;
        p0[1] = ar * x0i + ai * x0r + cr * x1i + ci * x1r;
        p1[0] = br * x0r - bi * x0i + dr * x1r - di * x1i;
        p1[1] = br * x0i + bi * x0r + dr * x1i + di * x1r;
    }
}

static void dense2_@S@(@T@* restrict psi, int64_t n, const int64_t* sq, const int64_t* off, const @T@* restrict mat) { DENSE_ANY_@S@(4, 2) }
static void dense3_@S@(@T@* restrict psi, int64_t n, const int64_t* sq, const int64_t* off, const @T@* restrict mat) { DENSE_ANY_@S@(8, 3) }
static void dense4_@S@(@T@* restrict psi, int64_t n, const int64_t* sq, const int64_t* off, const @T@* restrict mat) { DENSE_ANY_@S@(16, 4) }
static void dense5_@S@(@T@* restrict psi, int64_t n, const int64_t* sq, const int64_t* off, const @T@* restrict mat) { DENSE_ANY_@S@(32, 5) }
static void dense6_@S@(@T@* restrict psi, int64_t n, const int64_t* sq, const int64_t* off, const @T@* restrict mat) { DENSE_ANY_@S@(64, 6) }

int qs_dense_@S@(@T@* psi, int64_t n, int64_t k, const int64_t* sq, const int64_t* off, const @T@* mat) {
    if (k < 1 || k > n) return -1;
    switch (k) {
        case 1: dense1_@S@(psi, n, sq[0], mat); return 0;
        case 2: dense2_@S@(psi, n, sq, off, mat); return 0;
        case 3: dense3_@S@(psi, n, sq, off, mat); return 0;
        case 4: dense4_@S@(psi, n, sq, off, mat); return 0;
        case 5: dense5_@S@(psi, n, sq, off, mat); return 0;
        case 6: dense6_@S@(psi, n, sq, off, mat); return 0;
        default: return -1;
    }
}

/* Multiply amplitude i by diag[pext(i, mask)] (table split in re and im planes of 2^k entries). */
int qs_diag_@S@(@T@* psi, int64_t n, int64_t k, uint64_t mask, const @T@* diag) {
    const int64_t dim = (int64_t)1 << n;
    const int64_t tk = (int64_t)1 << k;
    const @T@* dr = diag; const @T@* di = diag + tk;
    #pragma omp parallel for schedule(static) if(n >= 14)
    for (int64_t i = 0; i < dim; ++i) {
        const uint64_t j = qs_pext((uint64_t)i, mask);
        @T@* p = psi + 2 * i;
        const @T@ xr = p[0], xi = p[1];
        p[0] = dr[j] * xr - di[j] * xi;
        p[1] = dr[j] * xi + di[j] * xr;
    }
    return 0;
}

/* Probability that qubit q reads 1. */
double qs_prob1_@S@(const @T@* psi, int64_t n, int64_t q) {
    const int64_t ng = (int64_t)1 << (n - 1);
    const int64_t stride = (int64_t)1 << q;
    double acc = 0.0;
    #pragma omp parallel for schedule(static) reduction(+:acc) if(n >= 14)
    for (int64_t g = 0; g < ng; ++g) {
        const int64_t i1 = (((g >> q) << (q + 1)) | (g & (stride - 1))) + stride;
        const double r = psi[2 * i1], m = psi[2 * i1 + 1];
        acc += r * r + m * m;
    }
    return acc;
}

/* Keep the half of the state where qubit q == outcome, multiplied by scale; zero the other half. */
int qs_collapse_@S@(@T@* psi, int64_t n, int64_t q, int64_t outcome, double scale) {
    const int64_t dim = (int64_t)1 << n;
    const @T@ s = (@T@)scale;
    #pragma omp parallel for schedule(static) if(n >= 14)
    for (int64_t i = 0; i < dim; ++i) {
        if (((i >> q) & 1) == outcome) { psi[2 * i] *= s; psi[2 * i + 1] *= s; }
        else { psi[2 * i] = 0; psi[2 * i + 1] = 0; }
    }
    return 0;
}

/* |psi_i|^2 into out (float64, 2^n entries). */
int qs_probs_@S@(const @T@* psi, int64_t n, double* out) {
    const int64_t dim = (int64_t)1 << n;
    #pragma omp parallel for schedule(static) if(n >= 14)
    for (int64_t i = 0; i < dim; ++i) {
        const double r = psi[2 * i], m = psi[2 * i + 1];
        out[i] = r * r + m * m;
    }
    return 0;
}

/* out = sum_i conj(psi[i ^ xm]) * (-1)^popcount(i & zm) * psi[i]  (re, im). */
int qs_pauli_@S@(const @T@* psi, int64_t n, uint64_t xm, uint64_t zm, double* out) {
    const int64_t dim = (int64_t)1 << n;
    double sr = 0.0, si = 0.0;
    #pragma omp parallel for schedule(static) reduction(+:sr, si) if(n >= 14)
    for (int64_t i = 0; i < dim; ++i) {
        const int64_t j = i ^ (int64_t)xm;
        const double ar = psi[2 * j], ai = -(double)psi[2 * j + 1];
        const double br = psi[2 * i], bi = psi[2 * i + 1];
        const double sg = (__builtin_popcountll((uint64_t)i & zm) & 1) ? -1.0 : 1.0;
        sr += sg * (ar * br - ai * bi);
        si += sg * (ar * bi + ai * br);
    }
    out[0] = sr; out[1] = si;
    return 0;
}

/* psi = |index> */
int qs_init_@S@(@T@* psi, int64_t n, int64_t index) {
    const int64_t dim = (int64_t)1 << n;
    #pragma omp parallel for schedule(static) if(n >= 14)
    for (int64_t i = 0; i < dim; ++i) { psi[2 * i] = 0; psi[2 * i + 1] = 0; }
    psi[2 * index] = 1;
    return 0;
}
