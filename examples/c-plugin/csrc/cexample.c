/*
 * cexample: an example dsrt backend written in C against dsrt_plugin.h (ABI 1.0).
 *
 * One host-emulated device. Its memory lives behind integer handles (slot + generation in a
 * table, never raw pointers), capped at MEMORY_BYTES. It runs add, gemm and reduce_sum in float16,
 * float32 and float64 with the numerics of dsrt's numpy references: float16 computes in float32
 * and rounds once to float16 (round to nearest even); sums and products accumulate in float32 for
 * float16/float32 and in float64 for float64. Every call finishes its work before it returns, so
 * the device is DSRT_DEVICE_SYNCHRONOUS and has no streams or events.
 *
 * Threading: every entry may be called from any thread at once. The handle table is guarded by a
 * mutex; kernels resolve their operands under it and compute outside it (the core never frees
 * memory a launch is using).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsrt_plugin.h"

#define MEMORY_BYTES (256ull << 20)

/* ------------------------------------------------------------------------------------ errors */
struct DsrtError {
    int32_t code;
    char message[512];
};

/* Handed back when there is no host memory even for an error object; error_destroy skips it. */
static DsrtError no_memory_error = {DSRT_ERR_OUT_OF_MEMORY, "cexample: host out of memory creating an error"};

static DsrtError* make_error(int32_t code, const char* fmt, ...) {
    DsrtError* err = (DsrtError*)malloc(sizeof(DsrtError));
    if (err == NULL) return &no_memory_error;
    va_list ap;
    va_start(ap, fmt);
    err->code = code;
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return err;
}

static int32_t error_code(const DsrtError* err) { return err->code; }
static const char* error_message(const DsrtError* err) { return err->message; }
static void error_destroy(DsrtError* err) {
    if (err != &no_memory_error) free(err);
}

/* ------------------------------------------------------------------------------------ memory */
typedef struct Block {
    unsigned char* data; /* NULL: slot unused */
    uint64_t size;
    uint32_t generation; /* bumped on free, so stale handles are refused */
} Block;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static Block* blocks = NULL;
static size_t num_blocks = 0;
static uint64_t used_bytes = 0;
static unsigned char zero_byte; /* what 0-byte allocations point at */

static DsrtHandle make_handle(size_t slot, uint32_t generation) {
    return ((uint64_t)generation << 32) | (uint64_t)(slot + 1);
}

/* The block behind handle, or NULL. Caller holds lock. */
static Block* find_block(DsrtHandle handle) {
    uint64_t slot = (handle & 0xffffffffu);
    if (slot == 0 || slot > num_blocks) return NULL;
    Block* b = &blocks[slot - 1];
    if (b->data == NULL || b->generation != (uint32_t)(handle >> 32)) return NULL;
    return b;
}

static DsrtError* check_device(int32_t device) {
    if (device != 0) return make_error(DSRT_ERR_INVALID_ARGUMENT, "cexample: no device %d (there is 1)", device);
    return NULL;
}

/* Resolve (handle, offset, nbytes) to a host address, bounds-checked. Caller holds lock. */
static DsrtError* resolve_locked(DsrtHandle handle, uint64_t offset, uint64_t nbytes, unsigned char** out) {
    Block* b = find_block(handle);
    if (b == NULL)
        return make_error(DSRT_ERR_INVALID_ARGUMENT, "cexample: unknown or freed handle 0x%llx", (unsigned long long)handle);
    if (offset > b->size || nbytes > b->size - offset)
        return make_error(DSRT_ERR_INVALID_ARGUMENT,
                          "cexample: %llu bytes at offset %llu run past the end of handle 0x%llx (%llu bytes)",
                          (unsigned long long)nbytes, (unsigned long long)offset, (unsigned long long)handle,
                          (unsigned long long)b->size);
    *out = b->data + offset;
    return NULL;
}

static DsrtError* resolve(DsrtHandle handle, uint64_t offset, uint64_t nbytes, unsigned char** out) {
    pthread_mutex_lock(&lock);
    DsrtError* err = resolve_locked(handle, offset, nbytes, out);
    pthread_mutex_unlock(&lock);
    return err;
}

static DsrtError* allocate(int32_t device, uint64_t nbytes, DsrtHandle* handle) {
    DsrtError* err = check_device(device);
    if (err) return err;
    pthread_mutex_lock(&lock);
    if (nbytes > MEMORY_BYTES - used_bytes) {
        uint64_t used = used_bytes;
        pthread_mutex_unlock(&lock);
        return make_error(DSRT_ERR_OUT_OF_MEMORY, "cexample: %llu bytes requested, %llu of %llu bytes in use",
                          (unsigned long long)nbytes, (unsigned long long)used, (unsigned long long)MEMORY_BYTES);
    }
    size_t slot = 0;
    while (slot < num_blocks && blocks[slot].data != NULL) slot++;
    if (slot == num_blocks) {
        size_t grown = num_blocks ? 2 * num_blocks : 64;
        Block* table = (Block*)realloc(blocks, grown * sizeof(Block));
        if (table == NULL) {
            pthread_mutex_unlock(&lock);
            return make_error(DSRT_ERR_OUT_OF_MEMORY, "cexample: host out of memory growing the handle table");
        }
        memset(table + num_blocks, 0, (grown - num_blocks) * sizeof(Block));
        blocks = table;
        num_blocks = grown;
    }
    unsigned char* data = nbytes ? (unsigned char*)calloc(1, (size_t)nbytes) : &zero_byte;
    if (data == NULL) {
        pthread_mutex_unlock(&lock);
        return make_error(DSRT_ERR_OUT_OF_MEMORY, "cexample: host out of memory for %llu bytes",
                          (unsigned long long)nbytes);
    }
    blocks[slot].data = data;
    blocks[slot].size = nbytes;
    used_bytes += nbytes;
    *handle = make_handle(slot, blocks[slot].generation);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static DsrtError* free_handle(int32_t device, DsrtHandle handle) {
    DsrtError* err = check_device(device);
    if (err) return err;
    pthread_mutex_lock(&lock);
    Block* b = find_block(handle);
    if (b == NULL) {
        pthread_mutex_unlock(&lock);
        return make_error(DSRT_ERR_INVALID_ARGUMENT, "cexample: free of unknown or freed handle 0x%llx",
                          (unsigned long long)handle);
    }
    if (b->data != &zero_byte) free(b->data);
    used_bytes -= b->size;
    b->data = NULL;
    b->size = 0;
    b->generation++;
    pthread_mutex_unlock(&lock);
    return NULL;
}

static DsrtError* copy_h2d(int32_t device, DsrtStream stream, DsrtHandle dst, uint64_t dst_offset, const void* src,
                           uint64_t nbytes) {
    (void)stream;
    unsigned char* p;
    DsrtError* err = check_device(device);
    if (err == NULL) err = resolve(dst, dst_offset, nbytes, &p);
    if (err) return err;
    memcpy(p, src, (size_t)nbytes);
    return NULL;
}

static DsrtError* copy_d2h(int32_t device, DsrtStream stream, void* dst, DsrtHandle src, uint64_t src_offset,
                           uint64_t nbytes) {
    (void)stream;
    unsigned char* p;
    DsrtError* err = check_device(device);
    if (err == NULL) err = resolve(src, src_offset, nbytes, &p);
    if (err) return err;
    memcpy(dst, p, (size_t)nbytes);
    return NULL;
}

static DsrtError* copy_d2d(int32_t device, DsrtStream stream, DsrtHandle dst, uint64_t dst_offset, int32_t src_device,
                           DsrtHandle src, uint64_t src_offset, uint64_t nbytes) {
    (void)stream;
    unsigned char *d, *s;
    DsrtError* err = check_device(device);
    if (err == NULL) err = check_device(src_device);
    if (err == NULL) err = resolve(dst, dst_offset, nbytes, &d);
    if (err == NULL) err = resolve(src, src_offset, nbytes, &s);
    if (err) return err;
    memmove(d, s, (size_t)nbytes);
    return NULL;
}

static DsrtError* synchronize(int32_t device, DsrtStream stream) {
    (void)stream;
    return check_device(device); /* nothing is ever queued */
}

/* ------------------------------------------------------------------------------------ dtypes */
enum { F16, F32, F64, NUM_DTYPES };
static const char* const dtype_names[NUM_DTYPES] = {"float16", "float32", "float64"};
static const size_t itemsizes[NUM_DTYPES] = {2, 4, 8};

static int dtype_of(const char* name) {
    for (int d = 0; d < NUM_DTYPES; d++)
        if (name != NULL && strcmp(name, dtype_names[d]) == 0) return d;
    return -1;
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 113;
            while (!(mant & 0x400u)) {
                mant <<= 1;
                exp--;
            }
            bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Round to nearest even, like numpy's float32 -> float16. */
static uint16_t float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to infinity */
    if (ax < 0x38800000u) {                                   /* below 2^-14: a float16 subnormal or zero */
        if (ax < 0x33000000u) return (uint16_t)sign;          /* below 2^-25 */
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, shift = 126 - e;
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = ax - 0x38000000u, q = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q++; /* a carry moves into the exponent, as it should */
    return (uint16_t)(sign | q);
}

static double load(const unsigned char* p, int dtype, size_t i) {
    switch (dtype) {
    case F16: { uint16_t h; memcpy(&h, p + 2 * i, 2); return half_to_float(h); }
    case F32: { float v; memcpy(&v, p + 4 * i, 4); return v; }
    default: { double v; memcpy(&v, p + 8 * i, 8); return v; }
    }
}

/* v is already a value of the compute type (float for F16/F32), so these conversions are exact
 * except the one rounding to float16. */
static void store(unsigned char* p, int dtype, size_t i, double v) {
    switch (dtype) {
    case F16: { uint16_t h = float_to_half((float)v); memcpy(p + 2 * i, &h, 2); break; }
    case F32: { float f = (float)v; memcpy(p + 4 * i, &f, 4); break; }
    default: memcpy(p + 8 * i, &v, 8); break;
    }
}

/* ------------------------------------------------------------------------------------ operands */
typedef struct Tensor {
    unsigned char* data;
    int dtype;
    int32_t ndim;
    const int64_t* shape;
    size_t size; /* elements */
} Tensor;

/* Caller holds lock. */
static DsrtError* tensor(const char* kernel, const char* what, const DsrtOperand* op, Tensor* t) {
    t->dtype = dtype_of(op->dtype);
    if (t->dtype < 0)
        return make_error(DSRT_ERR_UNSUPPORTED, "cexample: kernel '%s': %s has dtype %s, not float16/32/64", kernel, what,
                          op->dtype ? op->dtype : "(null)");
    size_t size = 1;
    for (int32_t d = 0; d < op->ndim; d++) size *= (size_t)op->shape[d];
    int64_t expect = (int64_t)itemsizes[t->dtype];
    for (int32_t d = op->ndim - 1; d >= 0 && size > 0; d--) {  /* no elements: any strides will do */
        if (op->shape[d] > 1 && op->strides[d] != expect)
            return make_error(DSRT_ERR_INVALID_ARGUMENT, "cexample: kernel '%s': %s is not C-contiguous (axis %d stride %lld)",
                              kernel, what, d, (long long)op->strides[d]);
        expect *= op->shape[d];
    }
    t->ndim = op->ndim;
    t->shape = op->shape;
    t->size = size;
    return resolve_locked(op->handle, op->offset, size * itemsizes[t->dtype], &t->data);
}

static const DsrtParam* find_param(const DsrtParam* params, size_t n, const char* name) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(params[i].name, name) == 0) return &params[i];
    return NULL;
}

static double param_float(const DsrtParam* params, size_t n, const char* name, double fallback) {
    const DsrtParam* p = find_param(params, n, name);
    if (p == NULL) return fallback;
    return p->kind == DSRT_PARAM_FLOAT ? p->f : (double)p->i;
}

static int param_bool(const DsrtParam* params, size_t n, const char* name) {
    const DsrtParam* p = find_param(params, n, name);
    return p != NULL && p->kind != DSRT_PARAM_NONE && p->i != 0;
}

/* ------------------------------------------------------------------------------------ kernels */
/* Each kernel exists twice: accumulating in float (float16, float32) and in double (float64). */
#define DEFINE_KERNELS(ACC, SUFFIX)                                                                            \
    static void add_##SUFFIX(const Tensor* a, const Tensor* b, Tensor* out) {                                 \
        for (size_t i = 0; i < out->size; i++) {                                                               \
            ACC x = (ACC)load(a->data, a->dtype, i), y = (ACC)load(b->data, b->dtype, i);                      \
            store(out->data, out->dtype, i, (ACC)(x + y));                                                     \
        }                                                                                                      \
    }                                                                                                          \
    /* Pairwise summation of n elements from index start (numpy's order of magnitude of error). */            \
    static ACC sum_##SUFFIX(const Tensor* x, size_t start, size_t n) {                                         \
        if (n <= 16) {                                                                                         \
            ACC s = 0;                                                                                         \
            for (size_t i = 0; i < n; i++) s = (ACC)(s + (ACC)load(x->data, x->dtype, start + i));             \
            return s;                                                                                          \
        }                                                                                                      \
        size_t half = n / 2;                                                                                   \
        return (ACC)(sum_##SUFFIX(x, start, half) + sum_##SUFFIX(x, start + half, n - half));                  \
    }                                                                                                          \
    static void reduce_sum_##SUFFIX(const Tensor* x, Tensor* out, size_t row) {                                \
        for (size_t r = 0; r < out->size; r++) store(out->data, out->dtype, r, sum_##SUFFIX(x, r * row, row)); \
    }                                                                                                          \
    static void gemm_##SUFFIX(const Tensor* a, const Tensor* b, const Tensor* c, Tensor* out, int ta, int tb,  \
                              double alpha, double beta, size_t m, size_t k, size_t n) {                       \
        size_t lda = (size_t)a->shape[1], ldb = (size_t)b->shape[1];                                           \
        for (size_t i = 0; i < m; i++)                                                                         \
            for (size_t j = 0; j < n; j++) {                                                                   \
                ACC acc = 0;                                                                                   \
                for (size_t p = 0; p < k; p++) {                                                               \
                    ACC x = (ACC)load(a->data, a->dtype, ta ? p * lda + i : i * lda + p);                      \
                    ACC y = (ACC)load(b->data, b->dtype, tb ? j * ldb + p : p * ldb + j);                      \
                    acc = (ACC)(acc + (ACC)(x * y));                                                           \
                }                                                                                              \
                ACC r = (ACC)((ACC)alpha * acc);                                                               \
                if (c != NULL && beta != 0.0)                                                                  \
                    r = (ACC)(r + (ACC)((ACC)beta * (ACC)load(c->data, c->dtype, i * n + j)));                 \
                store(out->data, out->dtype, i * n + j, r);                                                    \
            }                                                                                                  \
    }

DEFINE_KERNELS(float, f)
DEFINE_KERNELS(double, d)

static DsrtError* launch(int32_t device, DsrtStream stream, const char* kernel, const DsrtOperand* inputs,
                         size_t num_inputs, const DsrtOperand* output, const DsrtParam* params, size_t num_params) {
    (void)stream;
    DsrtError* err = check_device(device);
    if (err) return err;
    Tensor in[3], out;
    if (num_inputs > 3) return make_error(DSRT_ERR_INVALID_ARGUMENT, "cexample: kernel '%s': %zu inputs", kernel, num_inputs);
    static const char* const input_names[3] = {"input 0", "input 1", "input 2"};
    pthread_mutex_lock(&lock); /* resolve every operand at once; compute outside the lock */
    for (size_t i = 0; i < num_inputs && err == NULL; i++) err = tensor(kernel, input_names[i], &inputs[i], &in[i]);
    if (err == NULL) err = tensor(kernel, "output", output, &out);
    pthread_mutex_unlock(&lock);
    if (err) return err;
    int wide = out.dtype == F64;
    if (strcmp(kernel, "add") == 0 && num_inputs == 2) {
        if (out.dtype == F32) { /* the common case, without the per-element dtype switch */
            const float *a = (const float*)in[0].data, *b = (const float*)in[1].data;
            float* o = (float*)out.data;
            for (size_t i = 0; i < out.size; i++) o[i] = a[i] + b[i];
        } else if (wide) {
            add_d(&in[0], &in[1], &out);
        } else {
            add_f(&in[0], &in[1], &out);
        }
        return NULL;
    }
    if (strcmp(kernel, "reduce_sum") == 0 && num_inputs == 1) {
        /* out has one element per row: the whole array (axis=None) or each last-axis row (axis=-1). */
        size_t row = out.size ? in[0].size / out.size : 0;
        if (wide) reduce_sum_d(&in[0], &out, row);
        else reduce_sum_f(&in[0], &out, row);
        return NULL;
    }
    if (strcmp(kernel, "gemm") == 0 && (num_inputs == 2 || num_inputs == 3)) {
        int ta = param_bool(params, num_params, "trans_a"), tb = param_bool(params, num_params, "trans_b");
        double alpha = param_float(params, num_params, "alpha", 1.0), beta = param_float(params, num_params, "beta", 0.0);
        if (in[0].ndim != 2 || in[1].ndim != 2 || out.ndim != 2)
            return make_error(DSRT_ERR_INVALID_ARGUMENT, "cexample: kernel 'gemm' needs 2-D operands");
        size_t m = (size_t)out.shape[0], n = (size_t)out.shape[1];
        size_t k = (size_t)(ta ? in[0].shape[0] : in[0].shape[1]);
        const Tensor* c = num_inputs == 3 ? &in[2] : NULL;
        if (wide) gemm_d(&in[0], &in[1], c, &out, ta, tb, alpha, beta, m, k, n);
        else gemm_f(&in[0], &in[1], c, &out, ta, tb, alpha, beta, m, k, n);
        return NULL;
    }
    return make_error(DSRT_ERR_UNSUPPORTED, "cexample: no kernel '%s' with %zu inputs", kernel, num_inputs);
}

/* ------------------------------------------------------------------------------------ device */
static const DsrtKernelClaim claims[] = {
    {"add", dtype_names, NUM_DTYPES},
    {"gemm", dtype_names, NUM_DTYPES},
    {"reduce_sum", dtype_names, NUM_DTYPES},
};

static const DsrtDeviceDesc description = {
    sizeof(DsrtDeviceDesc),
    "cexample host-emulated device",
    "dsrt examples",
    MEMORY_BYTES,
    1,
    DSRT_DEVICE_SYNCHRONOUS,
    dtype_names,
    NUM_DTYPES,
    claims,
    sizeof claims / sizeof claims[0],
    1e9,
    5e9,
};

static DsrtError* device_count(int32_t* count) {
    *count = 1;
    return NULL;
}

static DsrtError* device_describe(int32_t device, const DsrtDeviceDesc** desc) {
    DsrtError* err = check_device(device);
    if (err) return err;
    *desc = &description;
    return NULL;
}

static void plugin_shutdown(void) {
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < num_blocks; i++)
        if (blocks[i].data != NULL && blocks[i].data != &zero_byte) free(blocks[i].data);
    free(blocks);
    blocks = NULL;
    num_blocks = 0;
    used_bytes = 0;
    pthread_mutex_unlock(&lock);
}

static const DsrtPluginApi api = {
    .struct_size = sizeof(DsrtPluginApi),
    .abi_major = DSRT_ABI_MAJOR,
    .abi_minor = DSRT_ABI_MINOR,
    .error_code = error_code,
    .error_message = error_message,
    .error_destroy = error_destroy,
    .initialize = NULL,
    .shutdown = plugin_shutdown,
    .device_count = device_count,
    .device_describe = device_describe,
    .allocate = allocate,
    .free = free_handle,
    .copy_h2d = copy_h2d,
    .copy_d2h = copy_d2h,
    .copy_d2d = copy_d2d,
    .synchronize = synchronize,
    .launch = launch,
    /* no streams or events: every call has finished when it returns */
};

const DsrtPluginApi* dsrt_plugin_get_api(void) { return &api; }
