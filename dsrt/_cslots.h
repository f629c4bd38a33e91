/* Helpers shared by dsrt's C extensions (dsrt/_fastlaunch.c, dsrt/memory/_fastpool.c,
 * plugins/cpu/dsrt_cpu/_ufunc.c): reading the object slots of dsrt's __slots__ classes by offset,
 * and calling a Python function with one object in front of a vectorcall's arguments.
 * Include after Python.h.
 */
#ifndef DSRT_CSLOTS_H
#define DSRT_CSLOTS_H

#include <structmember.h>

/* The object in slot `off` of `obj` (borrowed; NULL while unset). */
#define DSRT_SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* Byte offset of the object slot `name` of `type` (a class with __slots__), read from its member
   descriptor. 0 on success; -1 with TypeError set when `name` is not an object slot. */
static inline int dsrt_slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *out) {
    PyObject *d = PyDict_GetItemString(type->tp_dict, name); /* borrowed */
    if (d == NULL || Py_TYPE(d) != &PyMemberDescr_Type || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "dsrt: %s.%s is not an object slot", type->tp_name, name);
        return -1;
    }
    *out = ((PyMemberDescrObject *)d)->d_member->offset;
    return 0;
}

/* fn(first, *args, **kw) for a vectorcall's (args, nargs, kwnames): the reference Python path a C
   method descriptor hands a call to, with `self` put back in front. */
static inline PyObject *dsrt_call_with_first(PyObject *fn, PyObject *first, PyObject *const *args, Py_ssize_t nargs,
                                             PyObject *kwnames) {
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *small[16], **buf = small;
    if (total + 1 > 16 && (buf = PyMem_Malloc((size_t)(total + 1) * sizeof(PyObject *))) == NULL)
        return PyErr_NoMemory();
    buf[0] = first;
    for (Py_ssize_t i = 0; i < total; i++) buf[i + 1] = args[i];
    PyObject *r = PyObject_Vectorcall(fn, buf, (size_t)(nargs + 1), kwnames);
    if (buf != small) PyMem_Free(buf);
    return r;
}

#endif
