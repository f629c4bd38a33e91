/* The allocation and free paths of CachingPool in C (dsrt/memory/pool.py installs them; see there).
 *
 * allocate: a request whose rounded size has a block waiting in the quick cache pops it; else the one
 * fit rule of dsrt.memory.fit (fit(..., split=True)) takes a free block from the small or large
 * index and splits it in place; the block is counted and wrapped in an Allocation, under the pool's
 * lock, exactly as the Python allocate does. Anything else (a miss that needs a new segment,
 * compaction or spilling; queued frees to drain; a candidate block with stream events pending; an
 * odd argument) calls the Python allocate, which is the reference, before anything was changed.
 * free: the whole of the pool's _free_locked for a synchronous pool (quick-cache keep, merging the
 * oldest waiting block back, coalescing with free neighbours into the index), under the same lock;
 * every other free (an asynchronous pool, a spilled allocation) is handed to _free_locked itself.
 * Allocation.__del__: gives the allocation back through pool.free, swallowing errors as the Python
 * finaliser does.
 *
 * The module imports nothing: dsrt.memory.pool passes every object it needs to configure().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include "../_cslots.h"
#include <string.h>
#include <time.h>

static PyTypeObject *allocation_type, *block_type, *index_type;
static PyObject *use_clock, *python_allocate, *python_free, *free_descr;
/* The pool's constants (dsrt.memory.pool, dsrt.memory.fit), in bytes except the counts. */
static Py_ssize_t quick_max, quick_age, alignment, small_max, large_round, min_split, probes, spare_blocks, sl_shift;

/* Slot offsets. */
static Py_ssize_t b_alloc_ref, b_born, b_free, b_requested, b_segment, b_size, b_offset, b_prev, b_next, b_pending,
    b_host_view;
static Py_ssize_t s_handle_off, s_head, s_freed_at, s_large;
static Py_ssize_t fi_bins, fi_nonempty, fi_count, fi_free_bytes, fi_spare;
static Py_ssize_t al_device, al_exported, al_generation, al_handle, al_last_use, al_nbytes, al_offset, al_pool,
    al_pool_data, al_stream;

static PyObject *k_acquire, *k_release, *k_append, *k_free_locked, *k_free, *k_stream,
    *k_small, *k_large, *k_release_block, *small_zero;

#define SLOT DSRT_SLOT

/* The pool's counters as C integers (the twin of dsrt.memory.stats.Counters, whose __slots__ it
   must match: configure() checks). Python reads and writes them as int attributes; the paths below
   update them in place. */
enum {
    K_ALLOCATED,
    K_CACHE_MISSES,
    K_COMPACTIONS,
    K_FETCHES,
    K_IDLE_TRIMS,
    K_MOVED_BYTES,
    K_MOVES,
    K_NUM_ALLOCS,
    K_NUM_FREES,
    K_OOMS,
    K_PEAK_ALLOCATED,
    K_PEAK_REQUESTED,
    K_PEAK_RESERVED,
    K_QUICK_BYTES,
    K_QUICK_COUNT,
    K_REQUESTED,
    K_RESERVED,
    K_RETRIES,
    K_SEGMENT_ALLOCS,
    K_SEGMENT_FREES,
    K_SPILLED_BYTES_TOTAL,
    K_SPILLED_LIVE,
    K_SPILLS,
    K_COUNT
};

typedef struct {
    PyObject_HEAD
    long long f[K_COUNT];
} CountersObject;

static PyMemberDef counters_members[] = {
    {"allocated", T_LONGLONG, offsetof(CountersObject, f) + K_ALLOCATED * sizeof(long long), 0, NULL},
    {"cache_misses", T_LONGLONG, offsetof(CountersObject, f) + K_CACHE_MISSES * sizeof(long long), 0, NULL},
    {"compactions", T_LONGLONG, offsetof(CountersObject, f) + K_COMPACTIONS * sizeof(long long), 0, NULL},
    {"fetches", T_LONGLONG, offsetof(CountersObject, f) + K_FETCHES * sizeof(long long), 0, NULL},
    {"idle_trims", T_LONGLONG, offsetof(CountersObject, f) + K_IDLE_TRIMS * sizeof(long long), 0, NULL},
    {"moved_bytes", T_LONGLONG, offsetof(CountersObject, f) + K_MOVED_BYTES * sizeof(long long), 0, NULL},
    {"moves", T_LONGLONG, offsetof(CountersObject, f) + K_MOVES * sizeof(long long), 0, NULL},
    {"num_allocs", T_LONGLONG, offsetof(CountersObject, f) + K_NUM_ALLOCS * sizeof(long long), 0, NULL},
    {"num_frees", T_LONGLONG, offsetof(CountersObject, f) + K_NUM_FREES * sizeof(long long), 0, NULL},
    {"ooms", T_LONGLONG, offsetof(CountersObject, f) + K_OOMS * sizeof(long long), 0, NULL},
    {"peak_allocated", T_LONGLONG, offsetof(CountersObject, f) + K_PEAK_ALLOCATED * sizeof(long long), 0, NULL},
    {"peak_requested", T_LONGLONG, offsetof(CountersObject, f) + K_PEAK_REQUESTED * sizeof(long long), 0, NULL},
    {"peak_reserved", T_LONGLONG, offsetof(CountersObject, f) + K_PEAK_RESERVED * sizeof(long long), 0, NULL},
    {"quick_bytes", T_LONGLONG, offsetof(CountersObject, f) + K_QUICK_BYTES * sizeof(long long), 0, NULL},
    {"quick_count", T_LONGLONG, offsetof(CountersObject, f) + K_QUICK_COUNT * sizeof(long long), 0, NULL},
    {"requested", T_LONGLONG, offsetof(CountersObject, f) + K_REQUESTED * sizeof(long long), 0, NULL},
    {"reserved", T_LONGLONG, offsetof(CountersObject, f) + K_RESERVED * sizeof(long long), 0, NULL},
    {"retries", T_LONGLONG, offsetof(CountersObject, f) + K_RETRIES * sizeof(long long), 0, NULL},
    {"segment_allocs", T_LONGLONG, offsetof(CountersObject, f) + K_SEGMENT_ALLOCS * sizeof(long long), 0, NULL},
    {"segment_frees", T_LONGLONG, offsetof(CountersObject, f) + K_SEGMENT_FREES * sizeof(long long), 0, NULL},
    {"spilled_bytes_total", T_LONGLONG, offsetof(CountersObject, f) + K_SPILLED_BYTES_TOTAL * sizeof(long long), 0, NULL},
    {"spilled_live", T_LONGLONG, offsetof(CountersObject, f) + K_SPILLED_LIVE * sizeof(long long), 0, NULL},
    {"spills", T_LONGLONG, offsetof(CountersObject, f) + K_SPILLS * sizeof(long long), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *counters_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) || (kwargs && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "Counters() takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0);  /* zeroed */
}

static PyTypeObject CountersType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dsrt.memory._fastpool.Counters",
    .tp_basicsize = sizeof(CountersObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The pool's counters (see dsrt.memory.stats.Counters), held as C integers.",
    .tp_new = counters_new,
    .tp_members = counters_members,
};

#define CNT(c) (((CountersObject *)(c))->f)

/* Replace an object slot's value (steals `value`; NULL is an error already set). */
static inline int put(PyObject *obj, Py_ssize_t off, PyObject *value) {
    if (value == NULL) return -1;
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = value;
    Py_XDECREF(old);
    return 0;
}

/* An int slot's value; -1 with an error set if it is no int (check PyErr_Occurred). */
static inline long long get_int(PyObject *obj, Py_ssize_t off) {
    PyObject *v = SLOT(obj, off);
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "dsrt.memory._fastpool: an int slot is unset");
        return -1;
    }
    return PyLong_AsLongLong(v);
}

/* Byte sizes and offsets the paths below store are multiples of 256 (ALIGNMENT) and, in small
   segments, at most 2 MiB: one shared int object per such value, made on first use, keeps a pool of
   many blocks from allocating (and first touching) a fresh int for each. */
#define SHARED_STEP 256
#define SHARED_COUNT ((2 << 20) / SHARED_STEP + 1)
static PyObject *shared_ints[SHARED_COUNT];

static inline PyObject *int_of(long long value) {  /* new reference, or NULL with an error set */
    if (value >= 0 && value % SHARED_STEP == 0 && value / SHARED_STEP < SHARED_COUNT) {
        PyObject **slot = &shared_ints[value / SHARED_STEP];
        if (*slot == NULL && (*slot = PyLong_FromLongLong(value)) == NULL) return NULL;
        return Py_NewRef(*slot);
    }
    return PyLong_FromLongLong(value);
}

static inline int put_int(PyObject *obj, Py_ssize_t off, long long value) {
    return put(obj, off, int_of(value));
}

static int call_lock(PyObject *lock, PyObject *name, PyObject *arg, int *result) {
    PyObject *args[2] = {lock, arg};
    PyObject *r = PyObject_VectorcallMethod(name, args, (arg ? 2 : 1) | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r == NULL) return -1;
    if (result != NULL) *result = PyObject_IsTrue(r);
    Py_DECREF(r);
    return 0;
}


/* A lock for the pool (the twin of threading.Lock: acquire(blocking=True, timeout=-1), release(),
   locked(), a context manager) that the paths below take and drop without a method call. A
   blocking acquire that must wait releases the GIL, and a signal's handler runs while it waits
   (KeyboardInterrupt interrupts it, as it does threading.Lock's).

   With a GIL, every take and drop runs holding it, so the lock itself is the `locked` flag: taking a
   free lock is one store, no system lock and no clock read (CPython's own non-blocking acquire reads
   the monotonic clock, a quarter of this pool's uncontended cost). Only a thread that must wait
   sleeps, on `wake`, a system lock kept held that a drop releases while anyone waits; a woken
   thread re-checks the flag (another may have taken it first) and sleeps again if it must. */
typedef struct {
    PyObject_HEAD
    PyThread_type_lock wake;
    Py_ssize_t waiters;
    char locked;
} LockObject;

static PyTypeObject LockType;

#ifdef Py_GIL_DISABLED
#error "dsrt.memory._fastpool's lock relies on the GIL; build without it on a free-threaded interpreter"
#endif

static double monotonic_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int lock_take(LockObject *self, int blocking, double timeout) {  /* 1 taken, 0 not, -1 error */
    if (!self->locked) {
        self->locked = 1;
        return 1;
    }
    if (!blocking || timeout == 0) return 0;
    double deadline = timeout > 0 ? monotonic_s() + timeout : -1;
    int rc;
    self->waiters++;
    for (;;) {
        PY_TIMEOUT_T us = -1;
        if (deadline >= 0) {
            double left = deadline - monotonic_s();
            if (left <= 0) { rc = 0; break; }
            us = (PY_TIMEOUT_T)(left * 1e6);
        }
        PyLockStatus r;
        Py_BEGIN_ALLOW_THREADS
        r = PyThread_acquire_lock_timed(self->wake, us, 1);
        Py_END_ALLOW_THREADS
        if (r == PY_LOCK_INTR && (Py_MakePendingCalls() < 0 || PyErr_CheckSignals() < 0)) { rc = -1; break; }
        if (!self->locked) {
            self->locked = 1;
            rc = 1;
            break;
        }
    }
    self->waiters--;
    return rc;
}

static int lock_drop(LockObject *self) {
    if (!self->locked) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return -1;
    }
    self->locked = 0;
    if (self->waiters) PyThread_release_lock(self->wake);  /* wake one sleeper (extra wakes re-check) */
    return 0;
}

static PyObject *lock_acquire(LockObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"blocking", "timeout", NULL};
    int blocking = 1;
    double timeout = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|pd:acquire", kwlist, &blocking, &timeout)) return NULL;
    int r = lock_take(self, blocking, timeout);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

static PyObject *lock_release(LockObject *self, PyObject *unused) {
    if (lock_drop(self) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *lock_exit(LockObject *self, PyObject *args) {
    if (lock_drop(self) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *lock_locked(LockObject *self, PyObject *unused) { return PyBool_FromLong(self->locked); }

static PyObject *lock_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    LockObject *self = (LockObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    if ((self->wake = PyThread_allocate_lock()) == NULL) {
        Py_DECREF(self);
        PyErr_SetString(PyExc_MemoryError, "cannot allocate a lock");
        return NULL;
    }
    PyThread_acquire_lock(self->wake, WAIT_LOCK);  /* held: a waiter sleeps until a drop releases it */
    return (PyObject *)self;
}

static void lock_dealloc(LockObject *self) {
    if (self->wake != NULL) PyThread_free_lock(self->wake);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef lock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))lock_acquire, METH_VARARGS | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool"},
    {"release", (PyCFunction)lock_release, METH_NOARGS, "release()"},
    {"locked", (PyCFunction)lock_locked, METH_NOARGS, "locked() -> bool"},
    {"__enter__", (PyCFunction)(void (*)(void))lock_acquire, METH_VARARGS | METH_KEYWORDS, "acquire()"},
    {"__exit__", (PyCFunction)lock_exit, METH_VARARGS, "release()"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dsrt.memory._fastpool.Lock",
    .tp_basicsize = sizeof(LockObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The pool's lock: threading.Lock's interface, taken by the C paths without a method call.",
    .tp_new = lock_new,
    .tp_dealloc = (destructor)lock_dealloc,
    .tp_methods = lock_methods,
};

/* Take / drop the pool's lock: directly for a Lock of this module, else through its methods. */
static int take_lock(PyObject *lock, int blocking, int *got) {
    if (Py_TYPE(lock) == &LockType) {
        int r = lock_take((LockObject *)lock, blocking, -1);
        if (r < 0) return -1;
        *got = r;
        return 0;
    }
    return call_lock(lock, k_acquire, blocking ? NULL : Py_False, got);
}

static inline int release(PyObject *lock) {
    /* Keeps an error already set (the caller's) and reports a failing release over it. */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int rc = Py_TYPE(lock) == &LockType ? lock_drop((LockObject *)lock) : call_lock(lock, k_release, NULL, NULL);
    if (rc == 0) PyErr_Restore(type, value, tb);
    else { Py_XDECREF(type); Py_XDECREF(value); Py_XDECREF(tb); }
    return rc;
}

/* The parts of a pool the C paths use (the pool's `_core` slot; see dsrt.memory.pool): the objects a
   CachingPool makes once in __init__ and never rebinds, held here so a C path reaches them without a
   dictionary lookup each. */
typedef struct {
    PyObject_HEAD
    PyObject *lock, *counters, *device, *default_stream, *deferred, *quick, *small, *large;
    int sync;
} CoreObject;

static PyTypeObject CoreType;
static Py_ssize_t p_core, p_quick_blocks;  /* offsets of CachingPool's `_core` and `quick_blocks` slots */

static PyObject *core_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"lock", "counters", "device", "default_stream", "deferred", "quick", "small", "large",
                             "sync", NULL};
    PyObject *o[8];
    int sync;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!OOOO!OOp:PoolCore", kwlist, &o[0], &CountersType, &o[1], &o[2],
                                     &o[3], &o[4], &PyDict_Type, &o[5], &o[6], &o[7], &sync))
        return NULL;
    if (index_type == NULL || Py_TYPE(o[6]) != index_type || Py_TYPE(o[7]) != index_type || !PyDict_CheckExact(o[5])) {
        PyErr_SetString(PyExc_TypeError, "PoolCore: small and large must be FreeIndexes and quick a dict (configure first)");
        return NULL;
    }
    CoreObject *self = (CoreObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    PyObject **fields[8] = {&self->lock, &self->counters, &self->device, &self->default_stream, &self->deferred,
                            &self->quick, &self->small, &self->large};
    for (int i = 0; i < 8; i++) *fields[i] = Py_NewRef(o[i]);
    self->sync = sync;
    return (PyObject *)self;
}

static int core_traverse(CoreObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->lock); Py_VISIT(self->counters); Py_VISIT(self->device); Py_VISIT(self->default_stream);
    Py_VISIT(self->deferred); Py_VISIT(self->quick); Py_VISIT(self->small); Py_VISIT(self->large);
    return 0;
}

static int core_clear(CoreObject *self) {
    Py_CLEAR(self->lock); Py_CLEAR(self->counters); Py_CLEAR(self->device); Py_CLEAR(self->default_stream);
    Py_CLEAR(self->deferred); Py_CLEAR(self->quick); Py_CLEAR(self->small); Py_CLEAR(self->large);
    return 0;
}

static void core_dealloc(CoreObject *self) {
    PyObject_GC_UnTrack(self);
    core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dsrt.memory._fastpool.PoolCore",
    .tp_basicsize = sizeof(CoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "PoolCore(lock, counters, device, default_stream, deferred, quick, small, large, sync): the parts of a"
              " CachingPool its C paths use, made once by the pool.",
    .tp_new = core_new,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_dealloc = (destructor)core_dealloc,
};

/* The pool's core (borrowed), or NULL (no error set) where the pool has none: the Python methods run. */
static inline CoreObject *core_of(PyObject *pool) {
    PyObject *core = SLOT(pool, p_core);
    return core != NULL && Py_TYPE(core) == &CoreType && Py_TYPE(((CoreObject *)core)->counters) == &CountersType
               ? (CoreObject *)core : NULL;
}

static PyObject *fast_allocate(PyObject *pool, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
static PyObject *fast_free(PyObject *pool, PyObject *const *args, Py_ssize_t nargs);
static PyObject *fast_del(PyObject *alloc, PyObject *unused);
static PyMethodDef allocate_def = {"allocate", (PyCFunction)(void (*)(void))fast_allocate, METH_FASTCALL | METH_KEYWORDS,
                                   "CachingPool.allocate (quick-cache hit and fit in C; see dsrt.memory.pool)"};
static PyMethodDef free_def = {"free", (PyCFunction)(void (*)(void))fast_free, METH_FASTCALL,
                               "CachingPool.free (a synchronous pool's free in C; see dsrt.memory.pool)"};
static PyMethodDef del_def = {"__del__", (PyCFunction)fast_del, METH_NOARGS,
                              "Give the bytes back to the pool (Allocation's finaliser, in C)."};

static PyObject *configure(PyObject *mod, PyObject *args) {
    PyObject *pool_type, *alloc, *block, *counters, *segment, *index, *allocate, *free_fn;
    if (allocation_type != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "dsrt.memory._fastpool is configured once per process");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!OOO(nnnnnnnnn)", &PyType_Type, &pool_type, &PyType_Type, &alloc,
                          &PyType_Type, &block, &PyType_Type, &counters, &PyType_Type, &segment, &PyType_Type, &index,
                          &use_clock, &allocate, &free_fn, &quick_max, &quick_age, &alignment, &small_max, &large_round,
                          &min_split, &probes, &spare_blocks, &sl_shift))
        return NULL;
    if (sl_shift < 1 || sl_shift > 8 || probes < 1) {
        PyErr_SetString(PyExc_ValueError, "dsrt.memory._fastpool: fit constants out of range");
        return NULL;
    }
    PyTypeObject *bt = (PyTypeObject *)block, *at = (PyTypeObject *)alloc, *st = (PyTypeObject *)segment,
                 *it = (PyTypeObject *)index;
    PyObject *slots = PyObject_GetAttrString(counters, "__slots__");
    if (slots == NULL) return NULL;
    PyObject *mine = PyTuple_New(K_COUNT);
    if (mine == NULL) { Py_DECREF(slots); return NULL; }
    for (int k = 0; k < K_COUNT; k++) PyTuple_SET_ITEM(mine, k, PyUnicode_FromString(counters_members[k].name));
    PyObject *theirs = PySequence_Tuple(slots);
    int same = theirs != NULL ? PyObject_RichCompareBool(mine, theirs, Py_EQ) : -1;
    Py_DECREF(slots); Py_DECREF(mine); Py_XDECREF(theirs);
    if (same < 0) return NULL;
    if (!same) {
        PyErr_SetString(PyExc_TypeError, "dsrt.memory._fastpool: Counters no longer matches stats.Counters.__slots__");
        return NULL;
    }
    /* new_block sets every slot of a Block: a slot added in Python must be added there too. */
    PyObject *bslots = PyObject_GetAttrString(block, "__slots__");
    PyObject *bexpect = Py_BuildValue("(sssssssssss)", "alloc_ref", "born", "free", "host_view", "next", "offset",
                                      "pending", "prev", "requested", "segment", "size");
    PyObject *bhave = bslots != NULL ? PySequence_Tuple(bslots) : NULL;
    int bsame = bhave != NULL && bexpect != NULL ? PyObject_RichCompareBool(bhave, bexpect, Py_EQ) : -1;
    Py_XDECREF(bslots); Py_XDECREF(bexpect); Py_XDECREF(bhave);
    if (bsame < 0) return NULL;
    if (!bsame) {
        PyErr_SetString(PyExc_TypeError, "dsrt.memory._fastpool: Block.__slots__ changed; update new_block");
        return NULL;
    }
    if (dsrt_slot_offset(bt, "alloc_ref", &b_alloc_ref) || dsrt_slot_offset(bt, "born", &b_born) ||
        dsrt_slot_offset(bt, "free", &b_free) || dsrt_slot_offset(bt, "requested", &b_requested) ||
        dsrt_slot_offset(bt, "segment", &b_segment) || dsrt_slot_offset(bt, "size", &b_size) ||
        dsrt_slot_offset(bt, "offset", &b_offset) || dsrt_slot_offset(bt, "prev", &b_prev) ||
        dsrt_slot_offset(bt, "next", &b_next) || dsrt_slot_offset(bt, "pending", &b_pending) ||
        dsrt_slot_offset(bt, "host_view", &b_host_view) ||
        dsrt_slot_offset(st, "handle", &s_handle_off) || dsrt_slot_offset(st, "head", &s_head) ||
        dsrt_slot_offset(st, "freed_at", &s_freed_at) || dsrt_slot_offset(st, "large", &s_large) ||
        dsrt_slot_offset(it, "bins", &fi_bins) || dsrt_slot_offset(it, "nonempty", &fi_nonempty) ||
        dsrt_slot_offset(it, "count", &fi_count) || dsrt_slot_offset(it, "free_bytes", &fi_free_bytes) ||
        dsrt_slot_offset(it, "spare", &fi_spare) ||
        dsrt_slot_offset(at, "device", &al_device) || dsrt_slot_offset(at, "exported", &al_exported) ||
        dsrt_slot_offset(at, "generation", &al_generation) || dsrt_slot_offset(at, "handle", &al_handle) ||
        dsrt_slot_offset(at, "last_use", &al_last_use) || dsrt_slot_offset(at, "nbytes", &al_nbytes) ||
        dsrt_slot_offset(at, "offset", &al_offset) || dsrt_slot_offset(at, "pool", &al_pool) ||
        dsrt_slot_offset(at, "pool_data", &al_pool_data) || dsrt_slot_offset(at, "stream", &al_stream) ||
        dsrt_slot_offset((PyTypeObject *)pool_type, "_core", &p_core) ||
        dsrt_slot_offset((PyTypeObject *)pool_type, "quick_blocks", &p_quick_blocks))
        return NULL;
    allocation_type = at;
    block_type = bt;
    index_type = it;
    Py_INCREF(at); Py_INCREF(bt); Py_INCREF(it); Py_INCREF(use_clock); Py_INCREF(allocate); Py_INCREF(free_fn);
    python_allocate = allocate;
    python_free = free_fn;

    PyObject *a = PyDescr_NewMethod((PyTypeObject *)pool_type, &allocate_def);
    PyObject *f = PyDescr_NewMethod((PyTypeObject *)pool_type, &free_def);
    PyObject *d = PyDescr_NewMethod(at, &del_def);
    if (a == NULL || f == NULL || d == NULL) { Py_XDECREF(a); Py_XDECREF(f); Py_XDECREF(d); return NULL; }
    free_descr = Py_NewRef(f);  /* fast_del calls fast_free directly while it is the pool type's free */
    return Py_BuildValue("(NNN)", a, f, d);
}

/* ------------------------------------------------------------------------------------------------
 * The free-block index (the twin of dsrt.memory.fit.FreeIndex's methods, on the same objects).
 * Every function here runs under the pool's lock and calls no Python code.
 */

static inline Py_ssize_t bin_of(long long size) {  /* fit.bin_of (size >= SUBDIVISIONS) */
    int fl = 63 - __builtin_clzll((unsigned long long)size);
    return ((Py_ssize_t)fl << sl_shift) | (Py_ssize_t)((size >> (fl - sl_shift)) & ((1 << sl_shift) - 1));
}

static inline int add_int(PyObject *obj, Py_ssize_t off, long long delta) {
    long long v = get_int(obj, off);
    if (v == -1 && PyErr_Occurred()) return -1;
    return put_int(obj, off, v + delta);
}

/* The last item of `lst`, removed (list.pop() without the call; the list's reference becomes the caller's). */
static inline PyObject *list_pop(PyObject *lst) {
    Py_ssize_t len = PyList_GET_SIZE(lst);
    PyObject *item = PyList_GET_ITEM(lst, len - 1);
    Py_SET_SIZE(lst, len - 1);
    return item;
}

/* The index's bins dict and flags, checked; 0 on success, -1 with an error set. */
static int index_parts(PyObject *index, PyObject **bins, char **flags, Py_ssize_t *nflags) {
    if (Py_TYPE(index) != index_type) {
        PyErr_SetString(PyExc_TypeError, "dsrt.memory._fastpool: not a FreeIndex");
        return -1;
    }
    PyObject *b = SLOT(index, fi_bins), *f = SLOT(index, fi_nonempty);
    if (b == NULL || !PyDict_CheckExact(b) || f == NULL || !PyByteArray_CheckExact(f)) {
        PyErr_SetString(PyExc_TypeError, "dsrt.memory._fastpool: a FreeIndex without bins or flags");
        return -1;
    }
    *bins = b;
    *flags = PyByteArray_AS_STRING(f);
    *nflags = PyByteArray_GET_SIZE(f);
    return 0;
}

/* Put `block` in bin `b` (creating the bin). */
static int bin_add(PyObject *index, Py_ssize_t b, PyObject *block) {
    PyObject *bins;
    char *flags;
    Py_ssize_t nflags;
    if (index_parts(index, &bins, &flags, &nflags) < 0) return -1;
    if (b >= nflags) { PyErr_SetString(PyExc_OverflowError, "dsrt.memory._fastpool: bin out of range"); return -1; }
    PyObject *key = PyLong_FromSsize_t(b);
    if (key == NULL) return -1;
    int rc = -1;
    PyObject *bucket = PyDict_GetItemWithError(bins, key);
    if (bucket == NULL) {
        if (PyErr_Occurred() || (bucket = PyDict_New()) == NULL) goto out;
        int bad = PyDict_SetItem(bins, key, bucket);
        Py_DECREF(bucket);  /* the bins dict holds it */
        if (bad) goto out;
        flags[b] = 1;
    }
    rc = PyDict_SetItem(bucket, block, Py_None);
out:
    Py_DECREF(key);
    return rc;
}

/* Take `block` out of bin `b` (dropping the bin when it empties). */
static int bin_drop(PyObject *index, Py_ssize_t b, PyObject *block) {
    PyObject *bins;
    char *flags;
    Py_ssize_t nflags;
    if (index_parts(index, &bins, &flags, &nflags) < 0) return -1;
    PyObject *key = PyLong_FromSsize_t(b);
    if (key == NULL) return -1;
    int rc = -1;
    PyObject *bucket = PyDict_GetItemWithError(bins, key);
    if (bucket == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "dsrt.memory._fastpool: a free block's bin is missing");
        goto out;
    }
    if (PyDict_DelItem(bucket, block) < 0) goto out;
    if (PyDict_GET_SIZE(bucket) == 0) {
        if (PyDict_DelItem(bins, key) < 0) goto out;
        flags[b] = 0;
    }
    rc = 0;
out:
    Py_DECREF(key);
    return rc;
}

static int index_insert(PyObject *index, PyObject *block) {  /* FreeIndex.insert */
    long long size = get_int(block, b_size);
    if (PyErr_Occurred() || bin_add(index, bin_of(size), block) < 0) return -1;
    return add_int(index, fi_free_bytes, size) || add_int(index, fi_count, 1) ? -1 : 0;
}

static int index_remove(PyObject *index, PyObject *block) {  /* FreeIndex.remove */
    long long size = get_int(block, b_size);
    if (PyErr_Occurred() || bin_drop(index, bin_of(size), block) < 0) return -1;
    return add_int(index, fi_free_bytes, -size) || add_int(index, fi_count, -1) ? -1 : 0;
}

static int index_resized(PyObject *index, PyObject *block, long long old) {  /* FreeIndex.resized */
    long long size = get_int(block, b_size);
    if (PyErr_Occurred()) return -1;
    Py_ssize_t b_old = bin_of(old), b_new = bin_of(size);
    if (b_old != b_new && (bin_drop(index, b_old, block) < 0 || bin_add(index, b_new, block) < 0)) return -1;
    return add_int(index, fi_free_bytes, size - old);
}

static int index_recycle(PyObject *index, PyObject *block) {  /* FreeIndex.recycle */
    PyObject *spare = SLOT(index, fi_spare);
    if (spare == NULL || !PyList_CheckExact(spare)) {
        PyErr_SetString(PyExc_TypeError, "dsrt.memory._fastpool: a FreeIndex without spares");
        return -1;
    }
    if (PyList_GET_SIZE(spare) >= spare_blocks) return 0;
    if (put(block, b_host_view, Py_NewRef(Py_None)) < 0) return -1;
    return PyList_Append(spare, block);
}

/* Block(segment, offset, size): a free block with no neighbours, exactly as Block.__init__ makes it
   (without running it: the allocation path of a growing pool makes one per request). */
static PyObject *new_block(PyObject *segment, PyObject *offset, long long size) {
    PyObject *size_obj = int_of(size);
    if (size_obj == NULL) return NULL;
    PyObject *b = block_type->tp_alloc(block_type, 0);
    if (b == NULL) { Py_DECREF(size_obj); return NULL; }
    SLOT(b, b_segment) = Py_NewRef(segment);
    SLOT(b, b_offset) = Py_NewRef(offset);
    SLOT(b, b_size) = size_obj;
    SLOT(b, b_prev) = Py_NewRef(Py_None);
    SLOT(b, b_next) = Py_NewRef(Py_None);
    SLOT(b, b_free) = Py_NewRef(Py_True);
    SLOT(b, b_pending) = Py_NewRef(Py_None);
    SLOT(b, b_alloc_ref) = Py_NewRef(Py_None);
    SLOT(b, b_requested) = Py_NewRef(small_zero);
    SLOT(b, b_born) = Py_NewRef(small_zero);
    SLOT(b, b_host_view) = Py_NewRef(Py_None);
    return b;
}

/* fit(index, size, stream, split=True) for a request of `size` bytes (rounded): 1 with *out a new
   reference to the live block (out of the index, nothing pending), 0 where the Python allocate must
   decide (no block fits, or a candidate has stream events pending, whose usability only Python's
   Block.usable_on judges) with nothing changed, -1 on error. */
static int index_fit(PyObject *index, long long size, PyObject **out) {
    PyObject *bins;
    char *flags;
    Py_ssize_t nflags;
    if (index_parts(index, &bins, &flags, &nflags) < 0) return -1;
    Py_ssize_t b = bin_of(size), pos;
    PyObject *best = NULL, *cand, *ignored, *key;
    long long best_size = (long long)1 << 62;
    if (b < nflags && flags[b]) {  /* the request's own bin: the best of its first PROBES blocks */
        if ((key = PyLong_FromSsize_t(b)) == NULL) return -1;
        PyObject *bucket = PyDict_GetItemWithError(bins, key);
        Py_DECREF(key);
        if (bucket == NULL) return PyErr_Occurred() ? -1 : 0;
        Py_ssize_t seen = 0;
        pos = 0;
        while (PyDict_Next(bucket, &pos, &cand, &ignored)) {
            if (Py_TYPE(cand) != block_type) return 0;
            long long cs = get_int(cand, b_size);
            if (cs == -1 && PyErr_Occurred()) return -1;
            if (size <= cs && cs < best_size) {
                if (SLOT(cand, b_pending) != Py_None) return 0;
                best = cand;
                best_size = cs;
                if (cs == size) break;
            }
            if (++seen == probes) break;
        }
    }
    if (best == NULL) {  /* the smallest non-empty bin above: its first block */
        Py_ssize_t above = b + 1;
        if (above >= nflags) return 0;
        char *hit = memchr(flags + above, 1, (size_t)(nflags - above));
        if (hit == NULL) return 0;
        b = hit - flags;
        if ((key = PyLong_FromSsize_t(b)) == NULL) return -1;
        PyObject *bucket = PyDict_GetItemWithError(bins, key);
        Py_DECREF(key);
        if (bucket == NULL) return PyErr_Occurred() ? -1 : 0;
        pos = 0;
        if (!PyDict_Next(bucket, &pos, &cand, &ignored) || Py_TYPE(cand) != block_type ||
            SLOT(cand, b_pending) != Py_None)
            return 0;  /* (a pending first block: Python searches on, asking each block) */
        best = cand;
        best_size = get_int(cand, b_size);
        if (best_size == -1 && PyErr_Occurred()) return -1;
    }
    Py_INCREF(best);  /* borrowed from its bin until now */
    long long rest = best_size - size;
    int rc = -1;
    PyObject *live = NULL;
    if (rest >= min_split) {  /* cut `size` bytes off the front; the remainder keeps its place */
        PyObject *segment = SLOT(best, b_segment), *offset = SLOT(best, b_offset), *spare = SLOT(index, fi_spare);
        if (segment == NULL || offset == NULL || spare == NULL || !PyList_CheckExact(spare)) {
            PyErr_SetString(PyExc_TypeError, "dsrt.memory._fastpool: a free block without a place");
            goto out;
        }
        Py_ssize_t nspare = PyList_GET_SIZE(spare);
        if (nspare > 0) {
            live = list_pop(spare);
            if (put(live, b_segment, Py_NewRef(segment)) ||
                put(live, b_offset, Py_NewRef(offset)) || put_int(live, b_size, size) ||
                put(live, b_pending, Py_NewRef(Py_None)))
                goto out;
        } else if ((live = new_block(segment, offset, size)) == NULL) {
            goto out;
        }
        PyObject *prev = SLOT(best, b_prev);
        if (prev == NULL) { PyErr_SetString(PyExc_TypeError, "dsrt.memory._fastpool: a block without links"); goto out; }
        Py_INCREF(prev);
        int bad = put(live, b_prev, Py_NewRef(prev)) ||
                  (prev == Py_None ? put(segment, s_head, Py_NewRef(live)) : put(prev, b_next, Py_NewRef(live)));
        Py_DECREF(prev);
        long long off = PyLong_AsLongLong(offset);
        if (bad || (off == -1 && PyErr_Occurred()) || put(live, b_next, Py_NewRef(best)) ||
            put(best, b_prev, Py_NewRef(live)) || put_int(best, b_offset, off + size) || put_int(best, b_size, rest) ||
            add_int(index, fi_free_bytes, -size))
            goto out;
        Py_ssize_t rb = bin_of(rest);
        if (rb != b && (bin_drop(index, b, best) < 0 || bin_add(index, rb, best) < 0)) goto out;
        *out = live;
        live = NULL;
        rc = 1;
    } else {  /* the whole block */
        if (bin_drop(index, b, best) < 0 || add_int(index, fi_free_bytes, -best_size) ||
            add_int(index, fi_count, -1) || put(best, b_pending, Py_NewRef(Py_None)))
            goto out;
        *out = Py_NewRef(best);
        rc = 1;
    }
out:
    Py_XDECREF(live);
    Py_DECREF(best);
    return rc;
}

/* ------------------------------------------------------------------------------------------------
 * Allocation.
 */

/* The Python allocate, called with the caller's arguments and the pool in front. */
static inline PyObject *python_fallback(PyObject *pool, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return dsrt_call_with_first(python_allocate, pool, args, nargs, kwnames);
}

/* Pop a block of exactly `size` bytes from the quick cache: 1 with *out a new reference, 0 none. (A
   size's list stays in the dict when it empties: the next free of that size reuses it.) */
static int quick_pop(PyObject *quick, Py_ssize_t size, PyObject *c, PyObject **out) {
    PyObject *size_key = int_of(size);
    if (size_key == NULL) return -1;
    PyObject *lst = PyDict_GetItemWithError(quick, size_key);
    Py_DECREF(size_key);
    if (lst == NULL || !PyList_CheckExact(lst) || PyList_GET_SIZE(lst) == 0) return PyErr_Occurred() ? -1 : 0;
    *out = list_pop(lst);  /* a freed temporary of exactly this size, kept whole */
    CNT(c)[K_QUICK_BYTES] -= size;
    CNT(c)[K_QUICK_COUNT] -= 1;
    return 1;
}

/* CachingPool.allocate(nbytes, stream=None) */
static PyObject *fast_allocate(PyObject *pool, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *stream = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < 1 || nargs > 2 || nargs + nkw > 2 || !PyLong_CheckExact(args[0]))
        return python_fallback(pool, args, nargs, kwnames);
    if (nargs == 2) stream = args[1];
    else if (nkw == 1) {
        if (PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), k_stream) != 0) return python_fallback(pool, args, nargs, kwnames);
        stream = args[1];
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[0]);
    if (n == -1 && PyErr_Occurred()) { PyErr_Clear(); return python_fallback(pool, args, nargs, kwnames); }
    if (n < 0) n = 0;
    Py_ssize_t size;
    PyObject *which;
    if (n <= small_max) {
        size = (n + alignment - 1) & ~(alignment - 1);
        if (size == 0) size = alignment;
        which = k_small;
    } else {
        if (n > PY_SSIZE_T_MAX - large_round) return python_fallback(pool, args, nargs, kwnames);
        size = (n + large_round - 1) & ~(large_round - 1);
        which = k_large;
    }

    CoreObject *core = core_of(pool);
    if (core == NULL) return python_fallback(pool, args, nargs, kwnames);
    Py_INCREF(core);
    PyObject *lock = core->lock, *c = core->counters, *device = core->device;
    PyObject *index = which == k_large ? core->large : core->small;
    if (stream == NULL || stream == Py_None) stream = core->default_stream;
    Py_INCREF(stream);
    PyObject *block = NULL, *alloc = NULL;
    int locked = 0, handed_over = 0;
    int got = 0;
    if (take_lock(lock, 1, &got) < 0) goto done;
    locked = 1;
    Py_ssize_t waiting = PyObject_Length(core->deferred);
    if (waiting < 0) goto done;
    if (waiting) { handed_over = 1; goto done; }  /* frees to drain first: the Python allocate does it all */
    int found = 0;
    if (size <= quick_max && (found = quick_pop(core->quick, size, c, &block)) < 0) goto done;
    if (!found && (found = index_fit(index, size, &block)) < 0) goto done;
    if (!found) { handed_over = 1; goto done; }  /* a miss: new segment, compaction, spilling */
    if (Py_TYPE(block) != block_type) { PyErr_SetString(PyExc_TypeError, "dsrt.memory._fastpool: a non-block"); goto done; }
    {
        long long *f = CNT(c), bsize = get_int(block, b_size);
        if (bsize == -1 && PyErr_Occurred()) goto done;
        /* `requested` and `nbytes` share the caller's int where it is the request itself */
        PyObject *req = n == PyLong_AsSsize_t(args[0]) ? Py_NewRef(args[0]) : PyLong_FromSsize_t(n);
        if (put(block, b_free, Py_NewRef(Py_False)) || put(block, b_requested, req) ||
            put_int(block, b_born, f[K_NUM_ALLOCS]))
            goto done;
        f[K_ALLOCATED] += bsize;
        if (f[K_ALLOCATED] > f[K_PEAK_ALLOCATED]) f[K_PEAK_ALLOCATED] = f[K_ALLOCATED];
        f[K_REQUESTED] += n;
        if (f[K_REQUESTED] > f[K_PEAK_REQUESTED]) f[K_PEAK_REQUESTED] = f[K_REQUESTED];
        f[K_NUM_ALLOCS] += 1;
    }
    locked = 0;
    if (release(lock) < 0) goto done;
    /* Outside the lock: the block is live but has no alloc_ref yet, so no spill or compaction on
       another thread touches it (as in the Python allocate). */
    alloc = allocation_type->tp_alloc(allocation_type, 0);
    if (alloc == NULL) goto done;
    PyObject *segment = SLOT(block, b_segment), *tick = PyIter_Next(use_clock);
    if (segment == NULL || SLOT(segment, s_handle_off) == NULL || SLOT(block, b_offset) == NULL || tick == NULL) {
        Py_XDECREF(tick);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "dsrt.memory._fastpool: a block without a place");
        Py_CLEAR(alloc);
        goto done;
    }
    SLOT(alloc, al_device) = Py_NewRef(device);
    SLOT(alloc, al_handle) = Py_NewRef(SLOT(segment, s_handle_off));
    SLOT(alloc, al_offset) = Py_NewRef(SLOT(block, b_offset));
    SLOT(alloc, al_nbytes) = Py_NewRef(SLOT(block, b_requested));
    SLOT(alloc, al_pool) = Py_NewRef(pool);
    SLOT(alloc, al_stream) = Py_NewRef(stream);
    SLOT(alloc, al_generation) = Py_NewRef(small_zero);
    SLOT(alloc, al_exported) = Py_NewRef(Py_False);
    SLOT(alloc, al_last_use) = tick;
    SLOT(alloc, al_pool_data) = Py_NewRef(block);
    if (SLOT(alloc, al_nbytes) == NULL || put(block, b_alloc_ref, PyWeakref_NewRef(alloc, NULL)) < 0) Py_CLEAR(alloc);

done:
    if (locked && release(lock) < 0) Py_CLEAR(alloc);
    Py_XDECREF(block);
    Py_DECREF(stream); Py_DECREF(core);
    if (handed_over) return python_fallback(pool, args, nargs, kwnames);
    return alloc;
}

/* ------------------------------------------------------------------------------------------------
 * Freeing (a synchronous pool: no stream events are ever pending on its blocks).
 */

/* CachingPool._release_block: give `block` (live, or merged back from the quick cache) to its free
   index, coalescing with free neighbours. A block or neighbour with events pending goes to the Python
   method instead (it merges the events), before anything is changed. */
static int release_block(PyObject *pool, CoreObject *core, PyObject *block) {
    PyObject *seg = SLOT(block, b_segment), *prev = SLOT(block, b_prev), *nxt = SLOT(block, b_next);
    if (seg == NULL || prev == NULL || nxt == NULL || SLOT(seg, s_large) == NULL) {
        PyErr_SetString(PyExc_TypeError, "dsrt.memory._fastpool: a block without links");
        return -1;
    }
    int prev_free = prev != Py_None && SLOT(prev, b_free) == Py_True;
    int nxt_free = nxt != Py_None && SLOT(nxt, b_free) == Py_True;
    if (SLOT(block, b_pending) != Py_None || (prev_free && SLOT(prev, b_pending) != Py_None) ||
        (nxt_free && SLOT(nxt, b_pending) != Py_None)) {
        PyObject *rargs[2] = {pool, block};
        PyObject *r = PyObject_VectorcallMethod(k_release_block, rargs, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (r == NULL) return -1;
        Py_DECREF(r);
        return 0;
    }
    PyObject *index = SLOT(seg, s_large) == Py_True ? core->large : core->small;
    Py_INCREF(block); Py_INCREF(seg); Py_INCREF(prev); Py_INCREF(nxt); Py_INCREF(index);
    PyObject *kept = NULL;  /* the free block that holds the bytes at the end */
    int rc = -1;
    long long bsize = get_int(block, b_size);
    if ((bsize == -1 && PyErr_Occurred()) || put(block, b_free, Py_NewRef(Py_True))) goto out;
    if (prev_free) {  /* the free block before absorbs this one (and the one after, if free) */
        long long old = get_int(prev, b_size);
        if ((old == -1 && PyErr_Occurred()) || put_int(prev, b_size, old + bsize) || put(prev, b_next, Py_NewRef(nxt)) ||
            (nxt != Py_None && put(nxt, b_prev, Py_NewRef(prev))))
            goto out;
        if (nxt_free) {
            PyObject *after = SLOT(nxt, b_next);
            long long nsize = get_int(nxt, b_size);
            if (after == NULL || (nsize == -1 && PyErr_Occurred()) || index_remove(index, nxt) < 0 ||
                add_int(prev, b_size, nsize) || put(prev, b_next, Py_NewRef(after)) ||
                (after != Py_None && put(after, b_prev, Py_NewRef(prev))) || index_recycle(index, nxt) < 0)
                goto out;
        }
        if (index_resized(index, prev, old) < 0 || index_recycle(index, block) < 0) goto out;
        kept = prev;
    } else if (nxt_free) {  /* the free block after absorbs this one, taking its offset */
        long long old = get_int(nxt, b_size);
        PyObject *offset = SLOT(block, b_offset);
        if ((old == -1 && PyErr_Occurred()) || offset == NULL || put(nxt, b_offset, Py_NewRef(offset)) ||
            put_int(nxt, b_size, old + bsize) || put(nxt, b_prev, Py_NewRef(prev)) ||
            (prev == Py_None ? put(seg, s_head, Py_NewRef(nxt)) : put(prev, b_next, Py_NewRef(nxt))) ||
            index_resized(index, nxt, old) < 0 || index_recycle(index, block) < 0)
            goto out;
        kept = nxt;
    } else {
        if (index_insert(index, block) < 0) goto out;
        kept = block;
    }
    if (SLOT(kept, b_prev) == Py_None && SLOT(kept, b_next) == Py_None &&
        put_int(seg, s_freed_at, CNT(core->counters)[K_NUM_FREES]) < 0)
        goto out;
    rc = 0;
out:
    Py_DECREF(block); Py_DECREF(seg); Py_DECREF(prev); Py_DECREF(nxt); Py_DECREF(index);
    return rc;
}

/* CachingPool._quick_keep: put freed `block` of `size` bytes in the quick cache, stamped with the
   pool's free count, merging the oldest waiting blocks back beyond `limit` (quick_blocks). */
static int quick_keep(PyObject *pool, CoreObject *core, PyObject *block, long long size, long long limit) {
    PyObject *quick = core->quick, *c = core->counters;
    PyObject *size_key = int_of(size);
    int rc = -1;
    if (size_key == NULL) goto out;
    if (put_int(block, b_requested, -CNT(c)[K_NUM_FREES])) goto out;  /* negative while cached whole */
    PyObject *lst = PyDict_GetItemWithError(quick, size_key);
    if (lst == NULL) {
        if (PyErr_Occurred()) goto out;
        PyObject *fresh = PyList_New(1);
        if (fresh == NULL) goto out;
        PyList_SET_ITEM(fresh, 0, Py_NewRef(block));
        int bad = PyDict_SetItem(quick, size_key, fresh);
        Py_DECREF(fresh);
        if (bad) goto out;
    } else if (!PyList_CheckExact(lst) || PyList_Append(lst, block) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "dsrt.memory._fastpool: a quick list is no list");
        goto out;
    }
    long long *f = CNT(c);
    f[K_QUICK_BYTES] += size;
    f[K_QUICK_COUNT] += 1;
    while (f[K_QUICK_COUNT] > limit) {
        /* The oldest waiting block (smallest stamp: `requested` is minus it) goes back; at most
           limit + 1 wait, so the scan is short. */
        PyObject *key, *blocks, *old = NULL, *old_list = NULL;
        Py_ssize_t pos = 0, old_at = -1;
        long long oldest = 0;
        while (PyDict_Next(quick, &pos, &key, &blocks)) {
            if (!PyList_CheckExact(blocks)) { PyErr_SetString(PyExc_TypeError, "quick list is no list"); goto out; }
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(blocks); i++) {
                long long req = get_int(PyList_GET_ITEM(blocks, i), b_requested);
                if (req == -1 && PyErr_Occurred()) goto out;
                if (old == NULL || req > oldest) {
                    old = PyList_GET_ITEM(blocks, i);
                    oldest = req;
                    old_list = blocks;
                    old_at = i;
                }
            }
        }
        if (old == NULL) break;
        Py_INCREF(old); Py_INCREF(old_list);
        long long osize = get_int(old, b_size);
        int bad = (osize == -1 && PyErr_Occurred()) || PySequence_DelItem(old_list, old_at) < 0;
        if (!bad) {
            f[K_QUICK_BYTES] -= osize;
            f[K_QUICK_COUNT] -= 1;
            bad = put_int(old, b_requested, 0) || release_block(pool, core, old) < 0;
        }
        Py_DECREF(old); Py_DECREF(old_list);
        if (bad) goto out;
    }
    rc = 0;
out:
    Py_XDECREF(size_key);
    return rc;
}

/* CachingPool._free_locked for a synchronous pool, with the lock held: 1 done, 0 handed back to the
   caller (who calls the Python method; nothing was changed), -1 error. */
static int free_locked(PyObject *pool, CoreObject *core, PyObject *alloc) {
    PyObject *block = SLOT(alloc, al_pool_data), *c = core->counters;
    if (block == NULL || Py_TYPE(block) != block_type || !core->sync) return 0;
    PyObject *blocks = SLOT(pool, p_quick_blocks);  /* a setting the user may change */
    if (blocks == NULL || !PyLong_Check(blocks)) return 0;
    long long limit = PyLong_AsLongLong(blocks);
    long long size = get_int(block, b_size), born = get_int(block, b_born), breq = get_int(block, b_requested);
    if (PyErr_Occurred()) return -1;
    Py_INCREF(block);
    long long *f = CNT(c);
    int rc = -1;
    if (put(alloc, al_pool_data, Py_NewRef(Py_None)) || put(alloc, al_handle, Py_NewRef(Py_None)) ||
        put(block, b_alloc_ref, Py_NewRef(Py_None)))
        goto out;
    f[K_NUM_FREES] += 1;
    f[K_ALLOCATED] -= size;
    f[K_REQUESTED] -= breq;
    if (size <= quick_max && f[K_NUM_ALLOCS] - born <= quick_age && limit &&
        ((f[K_QUICK_BYTES] + size) << 5) <= f[K_RESERVED]) {
        if (quick_keep(pool, core, block, size, limit) < 0) goto out;
    } else if (release_block(pool, core, block) < 0) {
        goto out;
    }
    rc = 1;
out:
    Py_DECREF(block);
    return rc;
}

/* CachingPool.free(alloc) */
static PyObject *fast_free(PyObject *pool, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "CachingPool.free takes one Allocation");
        return NULL;
    }
    PyObject *alloc = args[0], *result = NULL;
    CoreObject *core = core_of(pool);
    if (core == NULL) return dsrt_call_with_first(python_free, pool, args, nargs, NULL);
    Py_INCREF(core);
    int got;
    if (take_lock(core->lock, 0, &got) < 0) goto done;
    if (!got) {  /* busy (another thread, or a finaliser inside this pool's critical section): queue it */
        PyObject *aargs[2] = {core->deferred, alloc};
        result = PyObject_VectorcallMethod(k_append, aargs, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        goto done;
    }
    int done_here = Py_TYPE(alloc) == allocation_type ? free_locked(pool, core, alloc) : 0;
    if (done_here == 0) {
        PyObject *fargs[2] = {pool, alloc};
        result = PyObject_VectorcallMethod(k_free_locked, fargs, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    } else if (done_here > 0) {
        result = Py_NewRef(Py_None);
    }
    if (release(core->lock) < 0) Py_CLEAR(result);
done:
    Py_DECREF(core);
    return result;
}

/* Allocation's tp_finalize: __del__ without looking it up and calling it (the slot CPython installs
   for a Python __del__ does both). Keeps the exception being handled, as finalisers must. */
static void alloc_finalize(PyObject *alloc) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *r = fast_del(alloc, NULL);
    if (r == NULL) PyErr_WriteUnraisable(alloc);
    else Py_DECREF(r);
    PyErr_Restore(et, ev, tb);
}

static PyObject *install_finalizer(PyObject *mod, PyObject *unused) {
    if (allocation_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "dsrt.memory._fastpool: configure first");
        return NULL;
    }
    /* Only while Allocation.__del__ is this module's: assigning __del__ again puts CPython's slot back. */
    PyObject *d = PyDict_GetItemString(allocation_type->tp_dict, "__del__");
    if (d == NULL || Py_TYPE(d) != &PyMethodDescr_Type || ((PyMethodDescrObject *)d)->d_method != &del_def)
        Py_RETURN_FALSE;
    allocation_type->tp_finalize = alloc_finalize;
    Py_RETURN_TRUE;
}

/* Allocation.__del__ */
static PyObject *fast_del(PyObject *alloc, PyObject *unused) {
    if (Py_TYPE(alloc) != allocation_type && !PyObject_TypeCheck(alloc, allocation_type)) Py_RETURN_NONE;
    PyObject *pool = SLOT(alloc, al_pool);
    if (pool == NULL || pool == Py_None) Py_RETURN_NONE;
    SLOT(alloc, al_pool) = Py_NewRef(Py_None);  /* the reference moves to `pool` */
    PyObject *r;
    if (_PyType_Lookup(Py_TYPE(pool), k_free) == free_descr) {
        r = fast_free(pool, &alloc, 1);
    } else {
        PyObject *fargs[2] = {pool, alloc};
        r = PyObject_VectorcallMethod(k_free, fargs, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    Py_DECREF(pool);
    if (r == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) return NULL;
        PyErr_Clear();  /* interpreter shutdown: nothing left to tell (as the Python finaliser) */
        Py_RETURN_NONE;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(CachingPool, Allocation, Block, Counters, Segment, FreeIndex, use_clock, python_allocate, python_free,"
     " (QUICK_MAX, QUICK_AGE, ALIGNMENT, SMALL_MAX, LARGE_ROUND, MIN_SPLIT, PROBES, SPARE_BLOCKS, log2(SUBDIVISIONS)))"
     " -> (allocate, free, __del__) method descriptors"},
    {"install_finalizer", install_finalizer, METH_NOARGS,
     "install_finalizer() -> bool: make Allocation's finaliser call the C __del__ directly (once it is installed)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "dsrt.memory._fastpool", "CachingPool's allocation and free paths in C (see dsrt.memory.pool).",
    -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpool(void) {
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(k_acquire, "acquire");
    INTERN(k_release, "release");
    INTERN(k_append, "append");
    INTERN(k_free_locked, "_free_locked");
    INTERN(k_free, "free");
    INTERN(k_stream, "stream");
    INTERN(k_small, "_small");
    INTERN(k_large, "_large");
    INTERN(k_release_block, "_release_block");
#undef INTERN
    if ((small_zero = PyLong_FromLong(0)) == NULL) return NULL;
    if (PyType_Ready(&CountersType) < 0 || PyType_Ready(&LockType) < 0 || PyType_Ready(&CoreType) < 0) return NULL;
    Py_INCREF(&CoreType);
    if (PyModule_AddObject(m, "PoolCore", (PyObject *)&CoreType) < 0) return NULL;
    Py_INCREF(&LockType);
    if (PyModule_AddObject(m, "Lock", (PyObject *)&LockType) < 0) return NULL;
    Py_INCREF(&CountersType);
    if (PyModule_AddObject(m, "Counters", (PyObject *)&CountersType) < 0) return NULL;
    return m;
}
