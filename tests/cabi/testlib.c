/*
 * A small dsrt C backend for the loader's tests: one device, float32 "add", streams and events,
 * and a switch to make any entry fail. Compiled by tests/cabi with one of:
 *
 *   (nothing)          ABI 1.0, the full table
 *   -DOLDER_TABLE      an older, smaller table: struct_size ends before the stream/event entries,
 *                      which point at poison() so a core that read them would be caught
 *   -DNEWER_TABLE      a newer, larger table (ABI 1.7) with two entries this core does not know
 *   -DWRONG_MAJOR      abi_major 2
 *   -DNO_SYMBOL        exports the table under another name
 *   -DINIT_UNAVAILABLE initialize fails with DSRT_ERR_UNAVAILABLE
 *   -DINIT_BROKEN      initialize fails with DSRT_ERR_INTERNAL
 *
 * testlib_fail(entry, code) makes the next call of `entry` fail with `code`; testlib_poison_calls()
 * counts calls of entries the core must not have read.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#include "dsrt_plugin.h"

struct DsrtError {
    int32_t code;
    char message[256];
};

static char fail_entry[64];
static int32_t fail_code;
static int poison_count;
static int live_errors;

void testlib_fail(const char* entry, int32_t code) {
    snprintf(fail_entry, sizeof fail_entry, "%s", entry ? entry : "");
    fail_code = code;
}
int testlib_poison_calls(void) { return poison_count; }
int testlib_live_errors(void) { return live_errors; }

static DsrtError* failing(const char* entry) {
    if (strcmp(fail_entry, entry) != 0) return NULL;
    fail_entry[0] = 0;
    DsrtError* err = (DsrtError*)malloc(sizeof *err);
    err->code = fail_code;
    snprintf(err->message, sizeof err->message, "testlib: injected failure in %s", entry);
    live_errors++;
    return err;
}

static int32_t error_code(const DsrtError* err) { return err->code; }
static const char* error_message(const DsrtError* err) { return err->message; }
static void error_destroy(DsrtError* err) {
    live_errors--;
    free(err);
}

void* testlib_poison(void);
void* testlib_poison(void) {
    poison_count++;
    return NULL;
}

#define FAIL_IF(entry)                       \
    do {                                     \
        DsrtError* e_ = failing(entry);      \
        if (e_) return e_;                   \
    } while (0)

static DsrtError* initialize(void) {
#if defined(INIT_UNAVAILABLE)
    testlib_fail("initialize", DSRT_ERR_UNAVAILABLE);
#elif defined(INIT_BROKEN)
    testlib_fail("initialize", DSRT_ERR_INTERNAL);
#endif
    FAIL_IF("initialize");
    return NULL;
}

static DsrtError* device_count(int32_t* count) {
    FAIL_IF("device_count");
    *count = 1;
    return NULL;
}

static const char* const dtypes[] = {"float32"};
static const DsrtKernelClaim claims[] = {{"add", dtypes, 1}};
static const DsrtDeviceDesc desc = {sizeof(DsrtDeviceDesc), "testlib device", "tests", 1 << 20, 1, 0,
                                    dtypes, 1, claims, 1, 1e6, 1e6};

static DsrtError* device_describe(int32_t device, const DsrtDeviceDesc** out) {
    (void)device;
    FAIL_IF("device_describe");
    *out = &desc;
    return NULL;
}

#define MAX_BLOCKS 4096
static unsigned char* blocks[MAX_BLOCKS + 1];

static DsrtError* allocate(int32_t device, uint64_t nbytes, DsrtHandle* handle) {
    (void)device;
    FAIL_IF("allocate");
    for (DsrtHandle h = 1; h <= MAX_BLOCKS; h++)
        if (blocks[h] == NULL) {
            blocks[h] = (unsigned char*)calloc(1, nbytes ? nbytes : 1);
            *handle = h;
            return NULL;
        }
    testlib_fail("allocate", DSRT_ERR_OUT_OF_MEMORY);
    return failing("allocate");
}

static DsrtError* free_(int32_t device, DsrtHandle handle) {
    (void)device;
    FAIL_IF("free");
    free(blocks[handle]);
    blocks[handle] = NULL;
    return NULL;
}

static DsrtError* copy_h2d(int32_t device, DsrtStream stream, DsrtHandle dst, uint64_t off, const void* src, uint64_t n) {
    (void)device, (void)stream;
    FAIL_IF("copy_h2d");
    memcpy(blocks[dst] + off, src, n);
    return NULL;
}

static DsrtError* copy_d2h(int32_t device, DsrtStream stream, void* dst, DsrtHandle src, uint64_t off, uint64_t n) {
    (void)device, (void)stream;
    FAIL_IF("copy_d2h");
    memcpy(dst, blocks[src] + off, n);
    return NULL;
}

static DsrtError* copy_d2d(int32_t device, DsrtStream stream, DsrtHandle dst, uint64_t doff, int32_t src_device,
                           DsrtHandle src, uint64_t soff, uint64_t n) {
    (void)device, (void)stream, (void)src_device;
    FAIL_IF("copy_d2d");
    memmove(blocks[dst] + doff, blocks[src] + soff, n);
    return NULL;
}

static DsrtError* synchronize(int32_t device, DsrtStream stream) {
    (void)device, (void)stream;
    FAIL_IF("synchronize");
    return NULL;
}

static DsrtError* launch(int32_t device, DsrtStream stream, const char* kernel, const DsrtOperand* in, size_t nin,
                         const DsrtOperand* out, const DsrtParam* params, size_t nparams) {
    (void)device, (void)stream, (void)params, (void)nparams, (void)kernel, (void)nin;
    FAIL_IF("launch");
    int64_t n = out->ndim ? out->shape[0] : 1;
    const float* a = (const float*)(blocks[in[0].handle] + in[0].offset);
    const float* b = (const float*)(blocks[in[1].handle] + in[1].offset);
    float* o = (float*)(blocks[out->handle] + out->offset);
    for (int64_t i = 0; i < n; i++) o[i] = a[i] + b[i];
    return NULL;
}

static DsrtStream next_stream = 1;
static DsrtEvent next_event = 1;

static DsrtError* stream_create(int32_t device, DsrtStream* s) {
    (void)device;
    FAIL_IF("stream_create");
    *s = next_stream++;
    return NULL;
}
static DsrtError* stream_destroy(int32_t device, DsrtStream s) {
    (void)device, (void)s;
    FAIL_IF("stream_destroy");
    return NULL;
}
static DsrtError* event_record(int32_t device, DsrtStream s, DsrtEvent* e) {
    (void)device, (void)s;
    FAIL_IF("event_record");
    *e = next_event++;
    return NULL;
}
static DsrtError* event_query(int32_t device, DsrtEvent e, int32_t* done) {
    (void)device, (void)e;
    FAIL_IF("event_query");
    *done = 1;
    return NULL;
}
static DsrtError* event_synchronize(int32_t device, DsrtEvent e) {
    (void)device, (void)e;
    FAIL_IF("event_synchronize");
    return NULL;
}
static DsrtError* event_elapsed(int32_t device, DsrtEvent a, DsrtEvent b, double* seconds) {
    (void)device;
    FAIL_IF("event_elapsed");
    *seconds = 0.25 * (double)(b - a);
    return NULL;
}
static DsrtError* event_destroy(int32_t device, DsrtEvent e) {
    (void)device, (void)e;
    FAIL_IF("event_destroy");
    return NULL;
}

#define TABLE_ENTRIES                                                                                         \
    .error_code = error_code, .error_message = error_message, .error_destroy = error_destroy,                 \
    .initialize = initialize, .shutdown = NULL, .device_count = device_count, .device_describe = device_describe, \
    .allocate = allocate, .free = free_, .copy_h2d = copy_h2d, .copy_d2h = copy_d2h, .copy_d2d = copy_d2d,     \
    .synchronize = synchronize, .launch = launch

#if defined(OLDER_TABLE)

static const DsrtPluginApi table = {
    .struct_size = offsetof(DsrtPluginApi, stream_create),
    .abi_major = 1,
    .abi_minor = 0,
    TABLE_ENTRIES,
    .stream_create = (DsrtError * (*)(int32_t, DsrtStream*))(void (*)(void))testlib_poison,
    .stream_destroy = (DsrtError * (*)(int32_t, DsrtStream))(void (*)(void))testlib_poison,
    .event_record = (DsrtError * (*)(int32_t, DsrtStream, DsrtEvent*))(void (*)(void))testlib_poison,
    .event_query = (DsrtError * (*)(int32_t, DsrtEvent, int32_t*))(void (*)(void))testlib_poison,
    .event_synchronize = (DsrtError * (*)(int32_t, DsrtEvent))(void (*)(void))testlib_poison,
    .event_elapsed = (DsrtError * (*)(int32_t, DsrtEvent, DsrtEvent, double*))(void (*)(void))testlib_poison,
    .event_destroy = (DsrtError * (*)(int32_t, DsrtEvent))(void (*)(void))testlib_poison,
};
#define TABLE (&table)
#elif defined(NEWER_TABLE)
static const struct {
    DsrtPluginApi api;
    void* (*future_entry_a)(void);
    void* (*future_entry_b)(void);
} newer = {
    {.struct_size = sizeof newer, .abi_major = 1, .abi_minor = 7, TABLE_ENTRIES,
     .stream_create = stream_create, .stream_destroy = stream_destroy, .event_record = event_record,
     .event_query = event_query, .event_synchronize = event_synchronize, .event_elapsed = event_elapsed,
     .event_destroy = event_destroy},
    testlib_poison,
    testlib_poison,
};
#define TABLE (&newer.api)
#else
#ifdef WRONG_MAJOR
#define MAJOR 2
#else
#define MAJOR DSRT_ABI_MAJOR
#endif
static const DsrtPluginApi table = {
    .struct_size = sizeof(DsrtPluginApi), .abi_major = MAJOR, .abi_minor = DSRT_ABI_MINOR, TABLE_ENTRIES,
    .stream_create = stream_create, .stream_destroy = stream_destroy, .event_record = event_record,
    .event_query = event_query, .event_synchronize = event_synchronize, .event_elapsed = event_elapsed,
    .event_destroy = event_destroy,
};
#define TABLE (&table)
#endif

#ifdef NO_SYMBOL
const DsrtPluginApi* dsrt_plugin_get_api_renamed(void) { return TABLE; }
#else
const DsrtPluginApi* dsrt_plugin_get_api(void) { return TABLE; }
#endif
