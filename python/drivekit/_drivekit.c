/*
 * _drivekit: the CPython binding of drivekit. The only file that includes
 * Python.h; the thin modules next to it (image.py, rng.py) only rename, and
 * camera.py turns array-likes into the typed buffers the methods here take.
 *
 * Rules this file follows (DESIGN.md, "Python"):
 *   - Every C call that does real work runs with the GIL released. drivekit's
 *     error message is thread-local and the OS thread does not change while
 *     the GIL is released, so it is read (copied) right after the call.
 *   - DK_E* codes become exceptions in one place: dkpy_raise().
 *   - Tensors are exported without copies through the buffer protocol and
 *     DLPack. A DLPack capsule keeps its own reference on the dk_buffer, never
 *     on a Python object, so its deleter may run on any thread without the GIL
 *     (torch frees tensors from its own threads).
 *   - Heap types, per-module state and multi-phase init.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "drivekit/drivekit.h"

PyMODINIT_FUNC PyInit__drivekit(void);

/* ------------------------------------------------------------------------ */
/* DLPack C ABI, laid out as the DLPack specification defines it (v1.x).   */

typedef struct {
    int32_t device_type;     /* 1 = kDLCPU */
    int32_t device_id;
} dkpy_DLDevice;

typedef struct {
    uint8_t code;            /* 0 int, 1 uint, 2 float, 4 bfloat, 6 bool */
    uint8_t bits;
    uint16_t lanes;
} dkpy_DLDataType;

typedef struct {
    void *data;
    dkpy_DLDevice device;
    int32_t ndim;
    dkpy_DLDataType dtype;
    int64_t *shape;
    int64_t *strides;        /* in elements */
    uint64_t byte_offset;
} dkpy_DLTensor;

typedef struct dkpy_DLManagedTensor {
    dkpy_DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct dkpy_DLManagedTensor *self);
} dkpy_DLManagedTensor;

typedef struct {
    uint32_t major;
    uint32_t minor;
} dkpy_DLPackVersion;

typedef struct dkpy_DLManagedTensorVersioned {
    dkpy_DLPackVersion version;
    void *manager_ctx;
    void (*deleter)(struct dkpy_DLManagedTensorVersioned *self);
    uint64_t flags;
    dkpy_DLTensor dl_tensor;
} dkpy_DLManagedTensorVersioned;

#define DKPY_DL_CPU 1
#define DKPY_DL_FLAG_READ_ONLY ((uint64_t)1 << 0)
#define DKPY_DL_FLAG_IS_COPIED ((uint64_t)1 << 1)

/* The consumers read these structs by offset: pin the layout on LP64. */
#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(dkpy_DLDevice) == 8, "DLDevice layout");
_Static_assert(sizeof(dkpy_DLDataType) == 4, "DLDataType layout");
_Static_assert(offsetof(dkpy_DLTensor, device) == 8, "DLTensor layout");
_Static_assert(offsetof(dkpy_DLTensor, ndim) == 16, "DLTensor layout");
_Static_assert(offsetof(dkpy_DLTensor, dtype) == 20, "DLTensor layout");
_Static_assert(offsetof(dkpy_DLTensor, shape) == 24, "DLTensor layout");
_Static_assert(offsetof(dkpy_DLTensor, strides) == 32, "DLTensor layout");
_Static_assert(offsetof(dkpy_DLTensor, byte_offset) == 40, "DLTensor layout");
_Static_assert(sizeof(dkpy_DLTensor) == 48, "DLTensor layout");
_Static_assert(offsetof(dkpy_DLManagedTensor, manager_ctx) == 48, "DLManagedTensor layout");
_Static_assert(offsetof(dkpy_DLManagedTensor, deleter) == 56, "DLManagedTensor layout");
_Static_assert(sizeof(dkpy_DLManagedTensor) == 64, "DLManagedTensor layout");
_Static_assert(offsetof(dkpy_DLManagedTensorVersioned, manager_ctx) == 8, "versioned layout");
_Static_assert(offsetof(dkpy_DLManagedTensorVersioned, deleter) == 16, "versioned layout");
_Static_assert(offsetof(dkpy_DLManagedTensorVersioned, flags) == 24, "versioned layout");
_Static_assert(offsetof(dkpy_DLManagedTensorVersioned, dl_tensor) == 32, "versioned layout");
#endif

/* Capsule names must outlive the capsules: static storage. */
static const char DKPY_CAPSULE_LEGACY[] = "dltensor";
static const char DKPY_CAPSULE_VERSIONED[] = "dltensor_versioned";

/* ------------------------------------------------------------------------ */
/* Module state and exceptions                                               */

enum {
    DKPY_EXC_ERROR = 0,
    DKPY_EXC_INVALID_ARGUMENT,
    DKPY_EXC_OUT_OF_MEMORY,
    DKPY_EXC_IO,
    DKPY_EXC_NOT_FOUND,
    DKPY_EXC_DECODE,
    DKPY_EXC_UNSUPPORTED,
    DKPY_EXC_RANGE,
    DKPY_EXC_OVERFLOW,
    DKPY_EXC_COUNT
};

typedef struct {
    PyTypeObject *tensor_type;
    PyTypeObject *pool_type;
    PyTypeObject *camera_type;
    PyTypeObject *video_type;
    PyTypeObject *scene_type;
    PyTypeObject *sim_type;
    PyTypeObject *loader_type;
    PyObject *exc[DKPY_EXC_COUNT];
} dkpy_state;

/* Each class derives from drivekit.Error and from the builtin a Python user
 * would naturally catch. Codes without a row raise drivekit.Error itself. */
static const struct {
    const char *name;        /* attribute name in the module */
    int status;              /* DK_E* raised as this class; 0 for the base */
    PyObject **builtin;      /* the second base */
    const char *doc;
} dkpy_exc_table[DKPY_EXC_COUNT] = {
    [DKPY_EXC_ERROR] = {"Error", 0, &PyExc_Exception,
        "Base class of every drivekit error. `status` holds the DK_E* code; the "
        "message is the library's \"function(): what, where\" text."},
    [DKPY_EXC_INVALID_ARGUMENT] = {"InvalidArgumentError", DK_EINVAL, &PyExc_ValueError,
        "An argument is invalid (DK_EINVAL). Also a ValueError."},
    [DKPY_EXC_OUT_OF_MEMORY] = {"OutOfMemoryError", DK_ENOMEM, &PyExc_MemoryError,
        "An allocation failed (DK_ENOMEM). Also a MemoryError."},
    [DKPY_EXC_IO] = {"DrivekitIOError", DK_EIO, &PyExc_OSError,
        "Reading or writing failed at the OS level (DK_EIO). Also an OSError."},
    [DKPY_EXC_NOT_FOUND] = {"NotFoundError", DK_ENOENT, &PyExc_FileNotFoundError,
        "A file, key or item does not exist (DK_ENOENT). Also a FileNotFoundError."},
    [DKPY_EXC_DECODE] = {"DecodeError", DK_EINVALIDDATA, &PyExc_ValueError,
        "Input data is corrupt, truncated or malformed (DK_EINVALIDDATA). Also a ValueError."},
    [DKPY_EXC_UNSUPPORTED] = {"UnsupportedError", DK_EUNSUPPORTED, &PyExc_NotImplementedError,
        "Valid but unsupported input or feature (DK_EUNSUPPORTED). Also a NotImplementedError."},
    [DKPY_EXC_RANGE] = {"RangeError", DK_ERANGE, &PyExc_IndexError,
        "An index or value is out of range (DK_ERANGE). Also an IndexError."},
    [DKPY_EXC_OVERFLOW] = {"SizeOverflowError", DK_EOVERFLOW, &PyExc_OverflowError,
        "A size computation would overflow (DK_EOVERFLOW). Also an OverflowError."},
};

static dkpy_state *state_of_module(PyObject *module)
{
    return (dkpy_state *)PyModule_GetState(module);
}

static dkpy_state *state_of_type(PyTypeObject *tp)
{
    return (dkpy_state *)PyType_GetModuleState(tp);
}

/* The message of a failing call, copied on the calling thread before anything
 * else can overwrite it. */
typedef struct {
    char text[DK_ERRMSG_MAX];
} dkpy_msg;

static void msg_grab(dkpy_msg *m)
{
    const char *s = dk_errmsg();
    size_t n = strlen(s);
    if (n >= sizeof m->text) n = sizeof m->text - 1;
    memcpy(m->text, s, n);
    m->text[n] = '\0';
}

/* Sets the exception for a DK_E* status. `msg` is the copied C message (NULL:
 * read dk_errmsg() now, which is only right when no other drivekit call ran
 * on this thread since the failing one). Returns NULL for `return dkpy_raise(...)`. */
static PyObject *dkpy_raise(dkpy_state *st, int status, const dkpy_msg *msg)
{
    PyObject *type = st->exc[DKPY_EXC_ERROR];
    for (int i = 1; i < DKPY_EXC_COUNT; i++) {
        if (dkpy_exc_table[i].status == status) {
            type = st->exc[i];
            break;
        }
    }
    const char *text = msg ? msg->text : dk_errmsg();
    PyObject *str = text[0] ? PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace")
                            : PyUnicode_FromString(dk_status_str(status));
    if (!str) return NULL;
    PyObject *exc = PyObject_CallOneArg(type, str);
    Py_DECREF(str);
    if (!exc) return NULL;
    PyObject *code = PyLong_FromLong(status);
    if (!code || PyObject_SetAttrString(exc, "status", code) < 0) {
        Py_XDECREF(code);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(code);
    PyErr_SetObject(type, exc);
    Py_DECREF(exc);
    return NULL;
}

/* Argument errors found by the binding itself: InvalidArgumentError (a
 * ValueError) with a formatted message. */
static PyObject *dkpy_invalid(dkpy_state *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PyObject *str = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (!str) return NULL;
    PyObject *exc = PyObject_CallOneArg(st->exc[DKPY_EXC_INVALID_ARGUMENT], str);
    Py_DECREF(str);
    if (!exc) return NULL;
    PyObject *code = PyLong_FromLong(DK_EINVAL);
    if (code) {
        PyObject_SetAttrString(exc, "status", code);
        Py_DECREF(code);
    }
    PyErr_SetObject(st->exc[DKPY_EXC_INVALID_ARGUMENT], exc);
    Py_DECREF(exc);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Tensor                                                                    */

typedef struct {
    PyObject_HEAD
    dk_tensor t;                         /* holds a reference on t.owner */
    Py_ssize_t itemsize;
    Py_ssize_t nbytes;                   /* numel * itemsize */
    Py_ssize_t shape[DK_MAX_DIMS];       /* for Py_buffer */
    Py_ssize_t bstrides[DK_MAX_DIMS];    /* bytes, for Py_buffer */
    Py_ssize_t exports;                  /* live Py_buffer views */
} dkpy_Tensor;

/* A valid address for empty tensors whose data is NULL: consumers of both
 * protocols dislike NULL, and nothing is ever read or written through it. */
static _Alignas(64) char dkpy_empty[64];

/* struct-module format of a dtype; NULL when there is none (bfloat16). */
static const char *dtype_format(dk_dtype t)
{
    switch (t) {
    case DK_U8: return "B";
    case DK_I8: return "b";
    case DK_U16: return "H";
    case DK_I16: return "h";
    case DK_U32: return "I";
    case DK_I32: return "i";
    case DK_U64: return "Q";
    case DK_I64: return "q";
    case DK_F16: return "e";
    case DK_F32: return "f";
    case DK_F64: return "d";
    case DK_BOOL: return "?";
    default: return NULL;
    }
}

/* Wraps `t`, taking over its owner reference (released on failure too). */
static PyObject *tensor_wrap(dkpy_state *st, dk_tensor *t)
{
    size_t isz = dk_dtype_size(t->dtype);
    if (isz == 0 || t->ndim < 0 || t->ndim > DK_MAX_DIMS) {
        dk_tensor_release(t);
        PyErr_SetString(PyExc_SystemError, "drivekit returned an invalid tensor");
        return NULL;
    }
    dkpy_Tensor *self = PyObject_New(dkpy_Tensor, st->tensor_type);
    if (!self) {
        dk_tensor_release(t);
        return NULL;
    }
    self->t = *t;
    memset(t, 0, sizeof *t);
    self->itemsize = (Py_ssize_t)isz;
    self->exports = 0;
    Py_ssize_t numel = 1;
    for (int i = 0; i < DK_MAX_DIMS; i++) {
        self->shape[i] = 0;
        self->bstrides[i] = 0;
    }
    for (int i = 0; i < self->t.ndim; i++) {
        self->shape[i] = (Py_ssize_t)self->t.shape[i];
        self->bstrides[i] = (Py_ssize_t)(self->t.strides[i] * (int64_t)isz);
        numel *= self->shape[i];
    }
    self->nbytes = numel * (Py_ssize_t)isz;
    return (PyObject *)self;
}

static void tensor_dealloc(PyObject *obj)
{
    dkpy_Tensor *self = (dkpy_Tensor *)obj;
    PyTypeObject *tp = Py_TYPE(obj);
    dk_tensor_release(&self->t);
    tp->tp_free(obj);
    Py_DECREF(tp);
}

static void *tensor_data(const dkpy_Tensor *self)
{
    return self->t.data ? self->t.data : (void *)dkpy_empty;
}

static int strides_c_contiguous(const dkpy_Tensor *self)
{
    Py_ssize_t expect = self->itemsize;
    for (int i = self->t.ndim - 1; i >= 0; i--) {
        if (self->shape[i] == 0) return 1;
        if (self->shape[i] != 1 && self->bstrides[i] != expect) return 0;
        expect *= self->shape[i];
    }
    return 1;
}

static int strides_f_contiguous(const dkpy_Tensor *self)
{
    Py_ssize_t expect = self->itemsize;
    for (int i = 0; i < self->t.ndim; i++) {
        if (self->shape[i] == 0) return 1;
        if (self->shape[i] != 1 && self->bstrides[i] != expect) return 0;
        expect *= self->shape[i];
    }
    return 1;
}

static int tensor_getbuffer(PyObject *obj, Py_buffer *view, int flags)
{
    dkpy_Tensor *self = (dkpy_Tensor *)obj;
    view->obj = NULL;
    const char *fmt = dtype_format(self->t.dtype);
    if ((flags & PyBUF_FORMAT) == PyBUF_FORMAT && !fmt) {
        PyErr_Format(PyExc_BufferError, "drivekit.Tensor: dtype %s has no buffer-protocol format",
                     dk_dtype_name(self->t.dtype));
        return -1;
    }
    int c_contig = strides_c_contiguous(self);
    int want_strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES;
    if (!want_strides && !c_contig) {
        PyErr_SetString(PyExc_BufferError, "drivekit.Tensor: not C-contiguous; request strides");
        return -1;
    }
    if ((flags & PyBUF_C_CONTIGUOUS) == PyBUF_C_CONTIGUOUS && !c_contig) {
        PyErr_SetString(PyExc_BufferError, "drivekit.Tensor: not C-contiguous");
        return -1;
    }
    if ((flags & PyBUF_F_CONTIGUOUS) == PyBUF_F_CONTIGUOUS && !strides_f_contiguous(self)) {
        PyErr_SetString(PyExc_BufferError, "drivekit.Tensor: not Fortran-contiguous");
        return -1;
    }
    if ((flags & PyBUF_ANY_CONTIGUOUS) == PyBUF_ANY_CONTIGUOUS && !c_contig &&
        !strides_f_contiguous(self)) {
        PyErr_SetString(PyExc_BufferError, "drivekit.Tensor: not contiguous");
        return -1;
    }
    view->buf = tensor_data(self);
    view->len = self->nbytes;
    view->itemsize = self->itemsize;
    view->readonly = 0;
    view->format = (flags & PyBUF_FORMAT) == PyBUF_FORMAT ? (char *)fmt : NULL;
    if ((flags & PyBUF_ND) == PyBUF_ND) {
        view->ndim = self->t.ndim;
        view->shape = self->t.ndim ? self->shape : NULL;
    } else {
        /* Without PyBUF_ND the consumer sees len / itemsize items in one row. */
        view->ndim = 1;
        view->shape = NULL;
    }
    view->strides = want_strides && view->ndim == self->t.ndim && self->t.ndim
                        ? self->bstrides : NULL;
    view->suboffsets = NULL;
    view->internal = NULL;
    view->obj = Py_NewRef(obj);
    self->exports++;
    return 0;
}

static void tensor_releasebuffer(PyObject *obj, Py_buffer *view)
{
    (void)view;
    ((dkpy_Tensor *)obj)->exports--;
}

static PyObject *int64_tuple(const int64_t *v, int n)
{
    PyObject *tup = PyTuple_New(n);
    if (!tup) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *x = PyLong_FromLongLong((long long)v[i]);
        if (!x) {
            Py_DECREF(tup);
            return NULL;
        }
        PyTuple_SET_ITEM(tup, i, x);
    }
    return tup;
}

static PyObject *tensor_get_shape(PyObject *obj, void *closure)
{
    (void)closure;
    dkpy_Tensor *self = (dkpy_Tensor *)obj;
    return int64_tuple(self->t.shape, self->t.ndim);
}

static PyObject *tensor_get_strides(PyObject *obj, void *closure)
{
    (void)closure;
    dkpy_Tensor *self = (dkpy_Tensor *)obj;
    int64_t b[DK_MAX_DIMS];
    for (int i = 0; i < self->t.ndim; i++) b[i] = (int64_t)self->bstrides[i];
    return int64_tuple(b, self->t.ndim);
}

static PyObject *tensor_get_dtype(PyObject *obj, void *closure)
{
    (void)closure;
    return PyUnicode_FromString(dk_dtype_name(((dkpy_Tensor *)obj)->t.dtype));
}

static PyObject *tensor_get_ndim(PyObject *obj, void *closure)
{
    (void)closure;
    return PyLong_FromLong(((dkpy_Tensor *)obj)->t.ndim);
}

static PyObject *tensor_get_nbytes(PyObject *obj, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(((dkpy_Tensor *)obj)->nbytes);
}

static PyObject *tensor_get_itemsize(PyObject *obj, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(((dkpy_Tensor *)obj)->itemsize);
}

static PyObject *tensor_get_data_ptr(PyObject *obj, void *closure)
{
    (void)closure;
    return PyLong_FromVoidPtr(tensor_data((dkpy_Tensor *)obj));
}

static PyObject *tensor_repr(PyObject *obj)
{
    dkpy_Tensor *self = (dkpy_Tensor *)obj;
    PyObject *shape = tensor_get_shape(obj, NULL);
    if (!shape) return NULL;
    PyObject *r = PyUnicode_FromFormat("drivekit.Tensor(shape=%R, dtype=%s)", shape,
                                       dk_dtype_name(self->t.dtype));
    Py_DECREF(shape);
    return r;
}

static PyObject *tensor_numpy(PyObject *obj, PyObject *noargs)
{
    (void)noargs;
    PyObject *np = PyImport_ImportModule("numpy");
    if (!np) return NULL;
    PyObject *arr = PyObject_CallMethod(np, "asarray", "O", obj);
    Py_DECREF(np);
    return arr;
}

static PyObject *tensor_dlpack_device(PyObject *obj, PyObject *noargs)
{
    (void)obj;
    (void)noargs;
    return Py_BuildValue("(ii)", DKPY_DL_CPU, 0);
}

/* DLPack deleters: the capsule (or the consumer that took it) calls them
 * exactly once. They touch no Python object, so they need no GIL. */
static void dl_delete_legacy(dkpy_DLManagedTensor *m)
{
    if (!m) return;
    dk_buffer_unref((dk_buffer *)m->manager_ctx);
    dk_free(m);
}

static void dl_delete_versioned(dkpy_DLManagedTensorVersioned *m)
{
    if (!m) return;
    dk_buffer_unref((dk_buffer *)m->manager_ctx);
    dk_free(m);
}

/* A consumer renames a capsule to "used_dltensor[_versioned]" when it takes
 * ownership; only a capsule that was never consumed still owns its tensor. */
static void dl_capsule_destructor(PyObject *cap)
{
    if (PyCapsule_IsValid(cap, DKPY_CAPSULE_LEGACY)) {
        dkpy_DLManagedTensor *m = PyCapsule_GetPointer(cap, DKPY_CAPSULE_LEGACY);
        if (m && m->deleter) m->deleter(m);
    } else if (PyCapsule_IsValid(cap, DKPY_CAPSULE_VERSIONED)) {
        dkpy_DLManagedTensorVersioned *m = PyCapsule_GetPointer(cap, DKPY_CAPSULE_VERSIONED);
        if (m && m->deleter) m->deleter(m);
    }
}

/* Strided element copy of `src` into the C-contiguous `dst` (same shape). */
static void copy_elements(const dk_tensor *src, dk_tensor *dst)
{
    size_t isz = dk_dtype_size(src->dtype);
    int64_t numel = dk_tensor_numel(src);
    if (numel <= 0) return;
    if (dk_tensor_is_contiguous(src)) {
        memcpy(dst->data, src->data, (size_t)numel * isz);
        return;
    }
    int64_t idx[DK_MAX_DIMS] = {0};
    char *out = (char *)dst->data;
    for (int64_t k = 0; k < numel; k++) {
        memcpy(out + (size_t)k * isz, dk_tensor_at(src, idx), isz);
        for (int d = src->ndim - 1; d >= 0; d--) {
            if (++idx[d] < src->shape[d]) break;
            idx[d] = 0;
        }
    }
}

/* Builds the capsule for `t` (which the capsule then references through its
 * own dk_buffer_ref). One dk_malloc holds the managed struct, shape, strides. */
static PyObject *dl_export(const dk_tensor *t, int versioned, int copied)
{
    uint8_t code, bits;
    if (dk_dtype_dlpack(t->dtype, &code, &bits) != DK_OK) {
        PyErr_Format(PyExc_BufferError, "drivekit.Tensor: dtype %s has no DLPack type",
                     dk_dtype_name(t->dtype));
        return NULL;
    }
    size_t head = versioned ? sizeof(dkpy_DLManagedTensorVersioned) : sizeof(dkpy_DLManagedTensor);
    size_t total = head + 2 * (size_t)t->ndim * sizeof(int64_t);
    char *mem = dk_malloc(total);
    if (!mem) return PyErr_NoMemory();
    memset(mem, 0, total);
    int64_t *shape = (int64_t *)(void *)(mem + head);
    int64_t *strides = shape + t->ndim;
    dkpy_DLTensor *dl;
    if (versioned) {
        dkpy_DLManagedTensorVersioned *m = (dkpy_DLManagedTensorVersioned *)(void *)mem;
        m->version.major = 1;
        m->version.minor = 0;
        m->manager_ctx = dk_buffer_ref(t->owner);
        m->deleter = dl_delete_versioned;
        m->flags = copied ? DKPY_DL_FLAG_IS_COPIED : 0;
        dl = &m->dl_tensor;
    } else {
        dkpy_DLManagedTensor *m = (dkpy_DLManagedTensor *)(void *)mem;
        m->manager_ctx = dk_buffer_ref(t->owner);
        m->deleter = dl_delete_legacy;
        dl = &m->dl_tensor;
    }
    for (int i = 0; i < t->ndim; i++) {
        shape[i] = t->shape[i];
        strides[i] = t->strides[i];
    }
    dl->data = t->data ? t->data : (void *)dkpy_empty;
    dl->device.device_type = DKPY_DL_CPU;
    dl->device.device_id = 0;
    dl->ndim = t->ndim;
    dl->dtype.code = code;
    dl->dtype.bits = bits;
    dl->dtype.lanes = 1;
    dl->shape = shape;
    dl->strides = strides;
    dl->byte_offset = 0;
    PyObject *cap = PyCapsule_New(mem, versioned ? DKPY_CAPSULE_VERSIONED : DKPY_CAPSULE_LEGACY,
                                  dl_capsule_destructor);
    if (!cap) {
        if (versioned)
            dl_delete_versioned((dkpy_DLManagedTensorVersioned *)(void *)mem);
        else
            dl_delete_legacy((dkpy_DLManagedTensor *)(void *)mem);
    }
    return cap;
}

static PyObject *tensor_dlpack(PyObject *obj, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream", "max_version", "dl_device", "copy", NULL};
    dkpy_Tensor *self = (dkpy_Tensor *)obj;
    PyObject *stream = Py_None, *max_version = Py_None, *dl_device = Py_None, *copy = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OOOO:__dlpack__", kwlist, &stream,
                                     &max_version, &dl_device, &copy))
        return NULL;
    if (stream != Py_None) {
        PyErr_SetString(PyExc_BufferError,
                        "drivekit.Tensor.__dlpack__: the tensor is on the CPU; stream must be None");
        return NULL;
    }
    int versioned = 0;
    if (max_version != Py_None) {
        if (!PyTuple_Check(max_version) || PyTuple_GET_SIZE(max_version) != 2) {
            PyErr_SetString(PyExc_TypeError,
                            "__dlpack__: max_version must be None or a (major, minor) tuple");
            return NULL;
        }
        long major = PyLong_AsLong(PyTuple_GET_ITEM(max_version, 0));
        if (major == -1 && PyErr_Occurred()) return NULL;
        versioned = major >= 1;
    }
    if (dl_device != Py_None) {
        int dev_type = 0, dev_id = 0;
        if (!PyArg_ParseTuple(dl_device, "ii:__dlpack__ dl_device", &dev_type, &dev_id))
            return NULL;
        if (dev_type != DKPY_DL_CPU || dev_id != 0) {
            PyErr_Format(PyExc_BufferError,
                         "__dlpack__: cannot export to device (%d, %d); the tensor is on (1, 0)",
                         dev_type, dev_id);
            return NULL;
        }
    }
    int do_copy = 0;
    if (copy != Py_None) {
        do_copy = PyObject_IsTrue(copy);
        if (do_copy < 0) return NULL;
    }
    if (!do_copy) return dl_export(&self->t, versioned, 0);

    dk_tensor c;
    int st;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    st = dk_tensor_alloc(&c, self->t.dtype, self->t.ndim, self->t.shape);
    if (st == DK_OK)
        copy_elements(&self->t, &c);
    else
        msg_grab(&msg);
    Py_END_ALLOW_THREADS
    if (st != DK_OK) return dkpy_raise(state_of_type(Py_TYPE(obj)), st, &msg);
    PyObject *cap = dl_export(&c, versioned, 1);
    dk_tensor_release(&c);
    return cap;
}

static PyGetSetDef tensor_getset[] = {
    {"shape", tensor_get_shape, NULL, "Extent of every dimension (tuple of int).", NULL},
    {"strides", tensor_get_strides, NULL, "Step of every dimension in BYTES, as numpy's.", NULL},
    {"dtype", tensor_get_dtype, NULL, "Element type as a numpy dtype name (\"uint8\", ...).", NULL},
    {"ndim", tensor_get_ndim, NULL, "Number of dimensions.", NULL},
    {"nbytes", tensor_get_nbytes, NULL, "Bytes spanned by the elements.", NULL},
    {"itemsize", tensor_get_itemsize, NULL, "Bytes per element.", NULL},
    {"data_ptr", tensor_get_data_ptr, NULL, "Address of element [0, ...] (int).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef tensor_methods[] = {
    {"numpy", tensor_numpy, METH_NOARGS,
     "numpy() -> numpy.ndarray\n\nA zero-copy numpy view (numpy.asarray(self))."},
    {"__dlpack__", (PyCFunction)(void (*)(void))tensor_dlpack, METH_VARARGS | METH_KEYWORDS,
     "__dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None) -> capsule\n\n"
     "DLPack export: a \"dltensor_versioned\" capsule (DLPack 1.0) when max_version[0] >= 1,\n"
     "else a legacy \"dltensor\" capsule. Zero-copy unless copy=True."},
    {"__dlpack_device__", tensor_dlpack_device, METH_NOARGS,
     "__dlpack_device__() -> (1, 0): the CPU."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot tensor_slots[] = {
    {Py_tp_doc, (void *)"An n-dimensional array owned by drivekit memory.\n\n"
                        "Exported without copies through the buffer protocol (numpy.asarray,\n"
                        "memoryview) and DLPack (numpy.from_dlpack, torch.from_dlpack). The memory\n"
                        "stays valid while any view or consumer is alive. Made by drivekit\n"
                        "functions; it cannot be constructed directly."},
    {Py_tp_dealloc, (void *)tensor_dealloc},
    {Py_tp_repr, (void *)tensor_repr},
    {Py_tp_getset, tensor_getset},
    {Py_tp_methods, tensor_methods},
    {Py_bf_getbuffer, (void *)tensor_getbuffer},
    {Py_bf_releasebuffer, (void *)tensor_releasebuffer},
    {0, NULL},
};

static PyType_Spec tensor_spec = {
    .name = "drivekit.Tensor",
    .basicsize = sizeof(dkpy_Tensor),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = tensor_slots,
};

/* ------------------------------------------------------------------------ */
/* Pool                                                                      */

typedef struct {
    PyObject_HEAD
    dk_pool *pool;
} dkpy_Pool;

static PyObject *pool_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"threads", NULL};
    int threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i:Pool", kwlist, &threads)) return NULL;
    dkpy_state *st = state_of_type(type);
    if (threads < 1) return dkpy_invalid(st, "Pool: threads must be >= 1, got %d", threads);
    dkpy_Pool *self = (dkpy_Pool *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->pool = NULL;
    dk_pool_config cfg;
    dk_pool_config_init(&cfg);
    cfg.n_threads = threads;
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_pool_create(&cfg, &self->pool);
    if (rc != DK_OK) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    if (rc != DK_OK) {
        Py_DECREF(self);
        return dkpy_raise(st, rc, &msg);
    }
    return (PyObject *)self;
}

static void pool_dealloc(PyObject *obj)
{
    dkpy_Pool *self = (dkpy_Pool *)obj;
    PyTypeObject *tp = Py_TYPE(obj);
    if (self->pool) {
        dk_pool *p = self->pool;
        self->pool = NULL;
        /* Joining the workers may wait: let other Python threads run. */
        Py_BEGIN_ALLOW_THREADS
        dk_pool_destroy(p);
        Py_END_ALLOW_THREADS
    }
    tp->tp_free(obj);
    Py_DECREF(tp);
}

static PyObject *pool_get_threads(PyObject *obj, void *closure)
{
    (void)closure;
    return PyLong_FromLong(dk_pool_size(((dkpy_Pool *)obj)->pool));
}

static PyObject *pool_repr(PyObject *obj)
{
    return PyUnicode_FromFormat("drivekit.Pool(threads=%d)", dk_pool_size(((dkpy_Pool *)obj)->pool));
}

static PyGetSetDef pool_getset[] = {
    {"threads", pool_get_threads, NULL, "Threads doing work, the caller included.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot pool_slots[] = {
    {Py_tp_doc, (void *)"Pool(threads)\n\n"
                        "An explicit thread pool (dk_pool) of `threads` threads, the calling thread\n"
                        "included (threads - 1 workers). Pass it as `threads=` to parallel functions\n"
                        "to reuse the workers across calls. Thread-safe; the workers are joined when\n"
                        "the object is deleted."},
    {Py_tp_new, (void *)pool_new},
    {Py_tp_dealloc, (void *)pool_dealloc},
    {Py_tp_repr, (void *)pool_repr},
    {Py_tp_getset, pool_getset},
    {0, NULL},
};

static PyType_Spec pool_spec = {
    .name = "drivekit.Pool",
    .basicsize = sizeof(dkpy_Pool),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = pool_slots,
};

/* `threads=` argument: None or an int n (n == 1: run on the caller; n > 1: a
 * temporary pool made here, destroyed by pool_arg_done) or a Pool. Call with
 * the GIL held; the temporary pool is made with it released. */
typedef struct {
    dk_pool *pool;
    int temporary;
} dkpy_pool_arg;

static int pool_arg(dkpy_state *st, PyObject *obj, dkpy_pool_arg *out)
{
    out->pool = NULL;
    out->temporary = 0;
    if (obj == NULL || obj == Py_None) return 0;
    if (PyObject_TypeCheck(obj, st->pool_type)) {
        out->pool = ((dkpy_Pool *)obj)->pool;
        return 0;
    }
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "threads must be an int or a drivekit.Pool, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    long n = PyLong_AsLong(obj);
    if (n == -1 && PyErr_Occurred()) return -1;
    if (n < 1 || n > 1024) {
        dkpy_invalid(st, "threads must be in [1, 1024], got %ld", n);
        return -1;
    }
    if (n == 1) return 0;
    dk_pool_config cfg;
    dk_pool_config_init(&cfg);
    cfg.n_threads = (int)n;
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_pool_create(&cfg, &out->pool);
    if (rc != DK_OK) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    if (rc != DK_OK) {
        out->pool = NULL;
        dkpy_raise(st, rc, &msg);
        return -1;
    }
    out->temporary = 1;
    return 0;
}

/* Safe without the GIL. */
static void pool_arg_done(dkpy_pool_arg *a)
{
    if (a->temporary) dk_pool_destroy(a->pool);
    a->pool = NULL;
    a->temporary = 0;
}

/* ------------------------------------------------------------------------ */
/* Argument helpers                                                          */

static int parse_pixfmt(dkpy_state *st, PyObject *obj, dk_pixfmt *out)
{
    static const struct {
        const char *name;
        dk_pixfmt fmt;
    } names[] = {
        {"rgb", DK_PIX_RGB}, {"bgr", DK_PIX_BGR}, {"rgba", DK_PIX_RGBA}, {"gray", DK_PIX_GRAY},
    };
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "format must be a str, not %.100s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    const char *s = PyUnicode_AsUTF8(obj);
    if (!s) return -1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].fmt;
            return 0;
        }
    }
    dkpy_invalid(st, "format must be 'rgb', 'bgr', 'rgba' or 'gray', got %R", obj);
    return -1;
}

/* An optional (a, b) pair of ints. */
static int parse_int_pair(PyObject *obj, const char *what, int *a, int *b)
{
    if (obj == Py_None) return 0;
    PyObject *seq = PySequence_Fast(obj, "");
    if (!seq || PySequence_Fast_GET_SIZE(seq) != 2) {
        Py_XDECREF(seq);
        PyErr_Format(PyExc_TypeError, "%s must be None or a pair of ints", what);
        return -1;
    }
    int vals[2];
    for (int i = 0; i < 2; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (v < 0 || v > INT32_MAX) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "%s: %ld is out of range", what, v);
            return -1;
        }
        vals[i] = (int)v;
    }
    Py_DECREF(seq);
    *a = vals[0];
    *b = vals[1];
    return 0;
}

static int parse_jpeg_opts(dkpy_state *st, PyObject *format, PyObject *scale, PyObject *min_size,
                           int fast_dct, int allow_warnings, dk_jpeg_decode_opts *o)
{
    dk_jpeg_decode_opts_init(o);
    if (format && format != Py_None && parse_pixfmt(st, format, &o->format) < 0) return -1;
    if (scale && parse_int_pair(scale, "scale", &o->scale_num, &o->scale_den) < 0) return -1;
    if (min_size && parse_int_pair(min_size, "min_size", &o->min_width, &o->min_height) < 0)
        return -1;
    o->fast_dct = fast_dct;
    o->allow_warnings = allow_warnings;
    return 0;
}

/* Encoded input: any object with a contiguous buffer (bytes, bytearray,
 * memoryview, numpy uint8 array). */
static int bytes_arg(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) == 0) return 0;
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "data must be bytes-like (bytes, bytearray, memoryview, numpy array), not %.100s",
                     Py_TYPE(obj)->tp_name);
    }
    return -1;
}

/* An image array: a C-contiguous uint8 buffer of shape (H, W) or (H, W, C),
 * wrapped as a borrowed (H, W, C) dk_tensor over the exporter's memory. The
 * caller releases `view` after the C call. */
static int image_arg(dkpy_state *st, PyObject *obj, Py_buffer *view, dk_tensor *t)
{
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "image must be an array exporting the buffer protocol (e.g. a numpy uint8 "
                     "array of shape (H, W) or (H, W, C)), not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        dkpy_invalid(st, "image must be C-contiguous (use numpy.ascontiguousarray)");
        return -1;
    }
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=' || *f == '<' || *f == '>' || *f == '!' || *f == '|') f++;
    if (strcmp(f, "B") != 0 || view->itemsize != 1) {
        PyErr_Format(PyExc_TypeError, "image must have dtype uint8, got buffer format '%s'",
                     view->format ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    if ((view->ndim != 2 && view->ndim != 3) || !view->shape) {
        dkpy_invalid(st, "image must have shape (H, W) or (H, W, C), got %d dimensions",
                     view->ndim);
        PyBuffer_Release(view);
        return -1;
    }
    int64_t shape[3] = {view->shape[0], view->shape[1], view->ndim == 3 ? view->shape[2] : 1};
    int rc = dk_tensor_view(t, view->buf, DK_U8, 3, shape);
    if (rc != DK_OK) {
        dkpy_raise(st, rc, NULL);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int parse_u32(PyObject *obj, uint32_t *out)
{
    unsigned long v = PyLong_AsUnsignedLong(obj);
    if (v == (unsigned long)-1 && PyErr_Occurred()) return -1;
    if (v > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in 32 bits");
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int parse_u32_array(PyObject *obj, const char *what, uint32_t *out, Py_ssize_t n)
{
    PyObject *seq = PySequence_Fast(obj, "");
    if (!seq || PySequence_Fast_GET_SIZE(seq) != n) {
        Py_XDECREF(seq);
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a sequence of %zd ints", what, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (parse_u32(PySequence_Fast_GET_ITEM(seq, i), &out[i]) < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Module functions                                                          */

static PyObject *py_version(PyObject *module, PyObject *noargs)
{
    (void)module;
    (void)noargs;
    return PyUnicode_FromString(dk_version_str());
}

static PyObject *py_alloc_live(PyObject *module, PyObject *noargs)
{
    (void)module;
    (void)noargs;
    return PyLong_FromLongLong((long long)dk_alloc_live());
}

static PyObject *py_buffer_cache(PyObject *module, PyObject *args)
{
    PyObject *limit = Py_None;
    if (!PyArg_ParseTuple(args, "|O", &limit)) return NULL;
    size_t old;
    if (limit == Py_None) {
        dk_buffer_cache_stats s;
        dk_buffer_cache_get_stats(&s);
        old = s.limit;
    } else {
        unsigned long long v = PyLong_AsUnsignedLongLong(limit);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return dkpy_invalid(state_of_module(module),
                                "buffer_cache(): the limit must be an int >= 0 (bytes), got %R",
                                limit);
        }
        Py_BEGIN_ALLOW_THREADS
        old = dk_buffer_cache_set_limit((size_t)v);
        Py_END_ALLOW_THREADS
    }
    dk_buffer_cache_stats s;
    dk_buffer_cache_get_stats(&s);
    return Py_BuildValue("{s:K,s:K,s:L,s:L,s:K}", "limit", (unsigned long long)s.limit, "bytes",
                         (unsigned long long)s.bytes, "blocks", (long long)s.blocks, "hits",
                         (long long)s.hits, "previous_limit", (unsigned long long)old);
}

static PyObject *py_ffmpeg_log_level(PyObject *module, PyObject *args)
{
    const char *level = NULL;
    if (!PyArg_ParseTuple(args, "|z", &level)) return NULL;
    PyObject *old = PyUnicode_FromString(dk_video_ffmpeg_log_level());
    if (!old || !level) return old;
    if (dk_video_set_ffmpeg_log_level(level) != DK_OK) {
        Py_DECREF(old);
        return dkpy_invalid(state_of_module(module), "set_ffmpeg_log_level(): unknown level %R (quiet, panic, fatal, "
                            "error, warning, info, verbose, debug, trace)",
                            PyTuple_GET_ITEM(args, 0));
    }
    return old;
}

static PyObject *py_status_str(PyObject *module, PyObject *arg)
{
    (void)module;
    long code = PyLong_AsLong(arg);
    if (code == -1 && PyErr_Occurred()) return NULL;
    if (code < INT32_MIN || code > INT32_MAX) return PyUnicode_FromString(dk_status_str(1));
    return PyUnicode_FromString(dk_status_str((int)code));
}

static const char *colorspace_name(int cs)
{
    switch (cs) {
    case 0: return "ycbcr";
    case 1: return "gray";
    case 2: return "rgb";
    case 3: return "cmyk";
    case 4: return "ycck";
    default: return "unknown";
    }
}

static PyObject *py_jpeg_info(PyObject *module, PyObject *arg)
{
    dkpy_state *st = state_of_module(module);
    Py_buffer in;
    if (bytes_arg(arg, &in) < 0) return NULL;
    dk_jpeg_info info;
    dkpy_msg msg = {{0}};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    dk_jpeg *j = NULL;
    rc = dk_jpeg_create(&j);
    if (rc == DK_OK) rc = dk_jpeg_info_get(j, in.buf, (size_t)in.len, &info);
    if (rc != DK_OK) msg_grab(&msg);
    dk_jpeg_destroy(j);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    PyObject *sub = info.subsampling >= 0 ? PyLong_FromLong(info.subsampling) : Py_NewRef(Py_None);
    if (!sub) return NULL;
    return Py_BuildValue("{s:i,s:i,s:N,s:s}", "width", info.width, "height", info.height,
                         "subsampling", sub, "colorspace", colorspace_name(info.colorspace));
}

static PyObject *py_decode_jpeg(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "format", "scale", "min_size", "fast_dct", "allow_warnings",
                             NULL};
    dkpy_state *st = state_of_module(module);
    PyObject *data, *format = NULL, *scale = Py_None, *min_size = Py_None;
    int fast_dct = 0, allow_warnings = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$OOOpp:decode_jpeg", kwlist, &data, &format,
                                     &scale, &min_size, &fast_dct, &allow_warnings))
        return NULL;
    dk_jpeg_decode_opts o;
    if (parse_jpeg_opts(st, format, scale, min_size, fast_dct, allow_warnings, &o) < 0)
        return NULL;
    Py_buffer in;
    if (bytes_arg(data, &in) < 0) return NULL;
    dk_tensor out;
    memset(&out, 0, sizeof out);
    dkpy_msg msg = {{0}};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    dk_jpeg *j = NULL;
    rc = dk_jpeg_create(&j);
    if (rc == DK_OK) rc = dk_jpeg_decode(j, in.buf, (size_t)in.len, &o, &out);
    if (rc != DK_OK) msg_grab(&msg);
    dk_jpeg_destroy(j);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    return tensor_wrap(st, &out);
}

static PyObject *py_decode_png(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "format", NULL};
    dkpy_state *st = state_of_module(module);
    PyObject *data, *format = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:decode_png", kwlist, &data, &format))
        return NULL;
    dk_pixfmt fmt = DK_PIX_RGB;
    if (format && format != Py_None && parse_pixfmt(st, format, &fmt) < 0) return NULL;
    Py_buffer in;
    if (bytes_arg(data, &in) < 0) return NULL;
    dk_tensor out;
    memset(&out, 0, sizeof out);
    dkpy_msg msg = {{0}};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = dk_png_decode(in.buf, (size_t)in.len, fmt, &out);
    if (rc != DK_OK) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    return tensor_wrap(st, &out);
}

/* Hands a dk_malloc'd encoder output to Python as bytes and frees it. */
static PyObject *bytes_take(uint8_t *p, size_t n)
{
    PyObject *b = n <= (size_t)PY_SSIZE_T_MAX ? PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n)
                                              : PyErr_NoMemory();
    dk_free(p);
    return b;
}

static PyObject *py_encode_jpeg(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"image", "quality", "format", "subsamp444", NULL};
    dkpy_state *st = state_of_module(module);
    PyObject *image, *format = Py_None;
    int quality = 95, subsamp444 = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|iOp:encode_jpeg", kwlist, &image, &quality,
                                     &format, &subsamp444))
        return NULL;
    if (quality < 1 || quality > 100)
        return dkpy_invalid(st, "encode_jpeg: quality must be in [1, 100], got %d", quality);
    dk_pixfmt fmt = DK_PIX_RGB;
    int explicit_fmt = format != Py_None;
    if (explicit_fmt && parse_pixfmt(st, format, &fmt) < 0) return NULL;
    Py_buffer view;
    dk_tensor t;
    if (image_arg(st, image, &view, &t) < 0) return NULL;
    if (!explicit_fmt) {
        switch (t.shape[2]) {
        case 1: fmt = DK_PIX_GRAY; break;
        case 3: fmt = DK_PIX_RGB; break;
        case 4: fmt = DK_PIX_RGBA; break;
        default:
            PyBuffer_Release(&view);
            return dkpy_invalid(st, "encode_jpeg: image must have 1, 3 or 4 channels, got %lld",
                                (long long)t.shape[2]);
        }
    }
    uint8_t *out = NULL;
    size_t out_size = 0;
    dkpy_msg msg = {{0}};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    dk_jpeg *j = NULL;
    rc = dk_jpeg_create(&j);
    if (rc == DK_OK) rc = dk_jpeg_encode(j, &t, fmt, quality, subsamp444, &out, &out_size);
    if (rc != DK_OK) msg_grab(&msg);
    dk_jpeg_destroy(j);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    return bytes_take(out, out_size);
}

static PyObject *py_encode_png(PyObject *module, PyObject *arg)
{
    dkpy_state *st = state_of_module(module);
    Py_buffer view;
    dk_tensor t;
    if (image_arg(st, arg, &view, &t) < 0) return NULL;
    uint8_t *out = NULL;
    size_t out_size = 0;
    dkpy_msg msg = {{0}};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = dk_png_encode(&t, &out, &out_size);
    if (rc != DK_OK) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    return bytes_take(out, out_size);
}

static PyObject *py_read_image(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "format", "scale", "min_size", "fast_dct", "allow_warnings",
                             NULL};
    dkpy_state *st = state_of_module(module);
    PyObject *path = NULL, *format = NULL, *scale = Py_None, *min_size = Py_None;
    int fast_dct = 0, allow_warnings = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|$OOOpp:read_image", kwlist,
                                     PyUnicode_FSConverter, &path, &format, &scale, &min_size,
                                     &fast_dct, &allow_warnings))
        return NULL;
    dk_jpeg_decode_opts o;
    if (parse_jpeg_opts(st, format, scale, min_size, fast_dct, allow_warnings, &o) < 0) {
        Py_DECREF(path);
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(path);
    dk_tensor out;
    memset(&out, 0, sizeof out);
    dkpy_msg msg = {{0}};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = dk_image_load(p, &o, &out);
    if (rc != DK_OK) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    return tensor_wrap(st, &out);
}

static PyObject *py_write_image(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "image", "quality", NULL};
    dkpy_state *st = state_of_module(module);
    PyObject *path = NULL, *image;
    int quality = 95;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O|i:write_image", kwlist,
                                     PyUnicode_FSConverter, &path, &image, &quality))
        return NULL;
    if (quality < 1 || quality > 100) {
        Py_DECREF(path);
        return dkpy_invalid(st, "write_image: quality must be in [1, 100], got %d", quality);
    }
    Py_buffer view;
    dk_tensor t;
    if (image_arg(st, image, &view, &t) < 0) {
        Py_DECREF(path);
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(path);
    dkpy_msg msg = {{0}};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = dk_image_save(p, &t, quality);
    if (rc != DK_OK) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    Py_DECREF(path);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    Py_RETURN_NONE;
}

static PyObject *py_philox4x32(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *ctr_obj, *key_obj;
    if (!PyArg_ParseTuple(args, "OO:philox4x32", &ctr_obj, &key_obj)) return NULL;
    uint32_t ctr[4], key[2], out[4];
    if (parse_u32_array(ctr_obj, "ctr", ctr, 4) < 0) return NULL;
    if (parse_u32_array(key_obj, "key", key, 2) < 0) return NULL;
    dk_philox4x32(ctr, key, out);
    return Py_BuildValue("(kkkk)", (unsigned long)out[0], (unsigned long)out[1],
                         (unsigned long)out[2], (unsigned long)out[3]);
}

/* rng_u32 / rng_uniform share everything but the fill function and dtype. */
static PyObject *rng_fill(PyObject *module, PyObject *args, PyObject *kwds, int uniform)
{
    static char *kwlist[] = {"seed", "stream", "n", "offset", "threads", NULL};
    dkpy_state *st = state_of_module(module);
    PyObject *seed_obj, *stream_obj, *offset_obj = NULL, *threads = NULL;
    long long n;
    if (!PyArg_ParseTupleAndKeywords(args, kwds,
                                     uniform ? "OOL|OO:rng_uniform" : "OOL|OO:rng_u32", kwlist,
                                     &seed_obj, &stream_obj, &n, &offset_obj, &threads))
        return NULL;
    /* PyLong_AsUnsignedLongLong rejects negatives and values past 64 bits. */
    unsigned long long seed = PyLong_AsUnsignedLongLong(seed_obj);
    if (seed == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    unsigned long long stream = PyLong_AsUnsignedLongLong(stream_obj);
    if (stream == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    unsigned long long offset = 0;
    if (offset_obj) {
        offset = PyLong_AsUnsignedLongLong(offset_obj);
        if (offset == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    }
    if (n < 0) return dkpy_invalid(st, "n must be >= 0, got %lld", n);
    dkpy_pool_arg pa;
    if (pool_arg(st, threads, &pa) < 0) return NULL;
    int64_t shape[1] = {(int64_t)n};
    dk_tensor out;
    memset(&out, 0, sizeof out);
    dkpy_msg msg = {{0}};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = dk_tensor_empty(&out, uniform ? DK_F32 : DK_U32, 1, shape);
    if (rc == DK_OK) {
        if (uniform)
            rc = dk_rng_fill_uniform(pa.pool, seed, stream, offset, (float *)out.data, n);
        else
            rc = dk_rng_fill_u32(pa.pool, seed, stream, offset, (uint32_t *)out.data, n);
    }
    if (rc != DK_OK) {
        msg_grab(&msg);
        dk_tensor_release(&out);
    }
    pool_arg_done(&pa);
    Py_END_ALLOW_THREADS
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    return tensor_wrap(st, &out);
}

static PyObject *py_rng_u32(PyObject *module, PyObject *args, PyObject *kwds)
{
    return rng_fill(module, args, kwds, 0);
}

static PyObject *py_rng_uniform(PyObject *module, PyObject *args, PyObject *kwds)
{
    return rng_fill(module, args, kwds, 1);
}

#define DKPY_KW(fn) (PyCFunction)(void (*)(void))(fn), METH_VARARGS | METH_KEYWORDS

/* ------------------------------------------------------------------------ */
/* Camera                                                                    */
/*
 * drivekit.Camera wraps a validated dk_camera by value. It is immutable, so
 * the batch methods copy it and run without the GIL. The type may be
 * subclassed (drivekit.camera.Camera adds the numpy layer), so methods find
 * the module state through PyType_GetModuleByDef, not the object's own type.
 * The batch methods take C-contiguous float64 buffers of shape (N, cols)
 * only; converting arbitrary inputs is the Python layer's job.
 */

static struct PyModuleDef dkpy_module;

typedef struct {
    PyObject_HEAD
    dk_camera cam;
} dkpy_Camera;

/* Module state from any type deriving from one of ours. NULL with an
 * exception set when there is none. */
static dkpy_state *state_of_derived(PyTypeObject *tp)
{
    PyObject *m = PyType_GetModuleByDef(tp, &dkpy_module);
    return m ? state_of_module(m) : NULL;
}

static const char *const dkpy_shutter_names[] = {
    "global", "top_to_bottom", "bottom_to_top", "left_to_right", "right_to_left",
};
static const char *const dkpy_ftheta_ref_names[] = {"angle_to_pixeldist", "pixeldist_to_angle"};

/* A str that must be one of `names` (n of them); *out gets its index. */
static int name_arg(dkpy_state *st, PyObject *obj, const char *what, const char *const *names,
                    int n, int *out)
{
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "Camera(): %s must be a str, not %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    const char *s = PyUnicode_AsUTF8(obj);
    if (!s) return -1;
    for (int i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    PyObject *choices = PyUnicode_FromString("");
    for (int i = 0; choices && i < n; i++) {
        PyObject *next = PyUnicode_FromFormat("%U%s'%s'", choices, i ? ", " : "", names[i]);
        Py_SETREF(choices, next);
    }
    if (!choices) return -1;
    dkpy_invalid(st, "Camera(): %s must be one of %U; got %R", what, choices, obj);
    Py_DECREF(choices);
    return -1;
}

/* A real number (int, float, numpy scalar). */
static int double_arg(PyObject *obj, const char *what, double *out)
{
    double v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "Camera(): %s must be a number, not %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    *out = v;
    return 0;
}

/* An int that fits a C int (the library checks the range it accepts). */
static int int_arg(dkpy_state *st, PyObject *obj, const char *what, int *out)
{
    PyObject *idx = PyNumber_Index(obj);
    if (!idx) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "Camera(): %s must be an int, not %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(idx, &overflow);
    Py_DECREF(idx);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow || v < INT32_MIN || v > INT32_MAX) {
        dkpy_invalid(st, "Camera(): %s = %R is out of range", what, obj);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Up to `maxn` numbers (or exactly `maxn` when `exact`), zero-padded into out. */
static int doubles_arg(dkpy_state *st, PyObject *obj, const char *what, double *out, int maxn,
                       int exact)
{
    for (int i = 0; i < maxn; i++) out[i] = 0;
    if (PyUnicode_Check(obj) || PyBytes_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "Camera(): %s must be a sequence of numbers, not %.100s",
                     what, Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *seq = PySequence_Fast(obj, "");
    if (!seq) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "Camera(): %s must be a sequence of numbers, not %.100s",
                     what, Py_TYPE(obj)->tp_name);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (exact ? n != maxn : n > maxn) {
        Py_DECREF(seq);
        dkpy_invalid(st, "Camera(): %s takes %s%d numbers, got %zd", what,
                     exact ? "" : "at most ", maxn, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        char name[64];
        PyOS_snprintf(name, sizeof name, "%s[%zd]", what, i);
        if (double_arg(PySequence_Fast_GET_ITEM(seq, i), name, &out[i]) < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

static int given(PyObject *obj)
{
    return obj != NULL && obj != Py_None;
}

static PyObject *camera_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"model", "width", "height", "fx", "fy", "cx", "cy", "k", "p", "s",
                             "reference", "fw_poly", "bw_poly", "linear_cde", "max_angle",
                             "margin", "shutter", NULL};
    dkpy_state *st = state_of_derived(type);
    if (!st) return NULL;
    const char *model_name;
    PyObject *width = NULL, *height = NULL, *fx = NULL, *fy = NULL, *cx = NULL, *cy = NULL;
    PyObject *k = NULL, *p = NULL, *s = NULL, *ref = NULL, *fw = NULL, *bw = NULL, *lin = NULL;
    PyObject *shutter = NULL;
    double max_angle = 0, margin = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|$OOOOOOOOOOOOOddO:Camera", kwlist,
                                     &model_name, &width, &height, &fx, &fy, &cx, &cy, &k, &p, &s,
                                     &ref, &fw, &bw, &lin, &max_angle, &margin, &shutter))
        return NULL;
    dk_camera c;
    memset(&c, 0, sizeof c);
    int rc = dk_camera_model_parse(model_name, &c.model);
    if (rc != DK_OK) return dkpy_raise(st, rc, NULL);
    const char *mn = dk_camera_model_name(c.model);
    int ftheta = c.model == DK_CAM_FTHETA;

    /* Required fields, then the fields of other models, which must be absent:
     * silently ignoring them would hide a mistake (k of a pinhole camera). */
    const struct {
        const char *name;
        PyObject *obj;
        int wanted;      /* 1 required, 0 optional, -1 not a parameter of this model */
    } fields[] = {
        {"width", width, 1}, {"height", height, 1}, {"cx", cx, 1}, {"cy", cy, 1},
        {"fx", fx, ftheta ? -1 : 1}, {"fy", fy, ftheta ? -1 : 1},
        {"k", k, c.model == DK_CAM_OPENCV || c.model == DK_CAM_FISHEYE ? 0 : -1},
        {"p", p, c.model == DK_CAM_OPENCV ? 0 : -1}, {"s", s, c.model == DK_CAM_OPENCV ? 0 : -1},
        {"reference", ref, ftheta ? 0 : -1}, {"fw_poly", fw, ftheta ? 0 : -1},
        {"bw_poly", bw, ftheta ? 0 : -1}, {"linear_cde", lin, ftheta ? 0 : -1},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (fields[i].wanted == 1 && !given(fields[i].obj)) {
            PyErr_Format(PyExc_TypeError, "Camera(): the %s model needs %s", mn, fields[i].name);
            return NULL;
        }
        if (fields[i].wanted == -1 && given(fields[i].obj))
            return dkpy_invalid(st, "Camera(): %s is not a parameter of the %s model",
                                fields[i].name, mn);
    }
    if (max_angle != 0 && (c.model == DK_CAM_PINHOLE || c.model == DK_CAM_OPENCV))
        return dkpy_invalid(st, "Camera(): max_angle is not a parameter of the %s model", mn);

    if (int_arg(st, width, "width", &c.width) < 0 || int_arg(st, height, "height", &c.height) < 0)
        return NULL;
    if (double_arg(cx, "cx", &c.cx) < 0 || double_arg(cy, "cy", &c.cy) < 0) return NULL;
    if (!ftheta && (double_arg(fx, "fx", &c.fx) < 0 || double_arg(fy, "fy", &c.fy) < 0))
        return NULL;
    if (given(k) && doubles_arg(st, k, "k", c.k, c.model == DK_CAM_OPENCV ? 6 : 4, 0) < 0)
        return NULL;
    if (given(p) && doubles_arg(st, p, "p", c.p, 2, 0) < 0) return NULL;
    if (given(s) && doubles_arg(st, s, "s", c.s, 4, 0) < 0) return NULL;
    if (ftheta) {
        int r = DK_FTHETA_ANGLE_TO_PIXELDIST;
        if (given(ref) && name_arg(st, ref, "reference", dkpy_ftheta_ref_names, 2, &r) < 0)
            return NULL;
        c.ftheta_ref = (dk_ftheta_ref)r;
        PyObject *refpoly = r == DK_FTHETA_ANGLE_TO_PIXELDIST ? fw : bw;
        if (!given(refpoly)) {
            PyErr_Format(PyExc_TypeError,
                         "Camera(): an ftheta camera with reference '%s' needs %s (the "
                         "calibrated polynomial)",
                         dkpy_ftheta_ref_names[r], r == DK_FTHETA_ANGLE_TO_PIXELDIST ? "fw_poly"
                                                                                     : "bw_poly");
            return NULL;
        }
        if (given(fw) && doubles_arg(st, fw, "fw_poly", c.fw_poly, 6, 0) < 0) return NULL;
        if (given(bw) && doubles_arg(st, bw, "bw_poly", c.bw_poly, 6, 0) < 0) return NULL;
        double cde[3] = {1, 0, 0};
        if (given(lin) && doubles_arg(st, lin, "linear_cde", cde, 3, 1) < 0) return NULL;
        c.linear_c = cde[0];
        c.linear_d = cde[1];
        c.linear_e = cde[2];
    }
    c.max_angle = max_angle;
    c.margin = margin;
    int sh = DK_SHUTTER_GLOBAL;
    if (given(shutter) && name_arg(st, shutter, "shutter", dkpy_shutter_names, 5, &sh) < 0)
        return NULL;
    c.shutter = (dk_shutter)sh;

    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_camera_validate(&c);
    if (rc != DK_OK) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    dkpy_Camera *self = (dkpy_Camera *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->cam = c;
    return (PyObject *)self;
}

static void camera_dealloc(PyObject *obj)
{
    PyTypeObject *tp = Py_TYPE(obj);
    tp->tp_free(obj);
    Py_DECREF(tp);
}

enum {
    CF_MODEL, CF_WIDTH, CF_HEIGHT, CF_FX, CF_FY, CF_CX, CF_CY, CF_K, CF_P, CF_S, CF_REFERENCE,
    CF_FW_POLY, CF_BW_POLY, CF_LINEAR_CDE, CF_MAX_ANGLE, CF_SHUTTER, CF_MARGIN, CF_COUNT
};

/* Field names in constructor-keyword order (to_dict, repr). */
static const char *const dkpy_camera_fields[CF_COUNT] = {
    "model", "width", "height", "fx", "fy", "cx", "cy", "k", "p", "s", "reference",
    "fw_poly", "bw_poly", "linear_cde", "max_angle", "shutter", "margin",
};

static PyObject *double_tuple(const double *v, int n)
{
    PyObject *tup = PyTuple_New(n);
    if (!tup) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *x = PyFloat_FromDouble(v[i]);
        if (!x) {
            Py_DECREF(tup);
            return NULL;
        }
        PyTuple_SET_ITEM(tup, i, x);
    }
    return tup;
}

/* A field's value, or None when it is not a parameter of the camera's model. */
static PyObject *camera_field(const dk_camera *c, int field)
{
    int ocv = c->model == DK_CAM_OPENCV, fth = c->model == DK_CAM_FTHETA;
    switch (field) {
    case CF_MODEL: return PyUnicode_FromString(dk_camera_model_name(c->model));
    case CF_WIDTH: return PyLong_FromLong(c->width);
    case CF_HEIGHT: return PyLong_FromLong(c->height);
    case CF_FX: return fth ? Py_NewRef(Py_None) : PyFloat_FromDouble(c->fx);
    case CF_FY: return fth ? Py_NewRef(Py_None) : PyFloat_FromDouble(c->fy);
    case CF_CX: return PyFloat_FromDouble(c->cx);
    case CF_CY: return PyFloat_FromDouble(c->cy);
    case CF_K:
        if (ocv) return double_tuple(c->k, 6);
        if (c->model == DK_CAM_FISHEYE) return double_tuple(c->k, 4);
        return Py_NewRef(Py_None);
    case CF_P: return ocv ? double_tuple(c->p, 2) : Py_NewRef(Py_None);
    case CF_S: return ocv ? double_tuple(c->s, 4) : Py_NewRef(Py_None);
    case CF_REFERENCE:
        return fth ? PyUnicode_FromString(dkpy_ftheta_ref_names[c->ftheta_ref == DK_FTHETA_PIXELDIST_TO_ANGLE])
                   : Py_NewRef(Py_None);
    case CF_FW_POLY: return fth ? double_tuple(c->fw_poly, 6) : Py_NewRef(Py_None);
    case CF_BW_POLY: return fth ? double_tuple(c->bw_poly, 6) : Py_NewRef(Py_None);
    case CF_LINEAR_CDE: {
        double cde[3] = {c->linear_c, c->linear_d, c->linear_e};
        return fth ? double_tuple(cde, 3) : Py_NewRef(Py_None);
    }
    case CF_MAX_ANGLE:
        return fth || c->model == DK_CAM_FISHEYE ? PyFloat_FromDouble(c->max_angle)
                                                 : Py_NewRef(Py_None);
    case CF_SHUTTER: {
        int sh = (int)c->shutter;
        return PyUnicode_FromString(sh >= 0 && sh < 5 ? dkpy_shutter_names[sh] : "unknown");
    }
    case CF_MARGIN: return PyFloat_FromDouble(c->margin);
    default: break;
    }
    PyErr_SetString(PyExc_SystemError, "drivekit.Camera: unknown field");
    return NULL;
}

static PyObject *camera_get(PyObject *obj, void *closure)
{
    return camera_field(&((dkpy_Camera *)obj)->cam, (int)(intptr_t)closure);
}

/* {field: value} for the fields of the camera's model; Camera(**d) rebuilds it. */
static PyObject *camera_dict(const dk_camera *c)
{
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (int f = 0; f < CF_COUNT; f++) {
        PyObject *v = camera_field(c, f);
        if (!v) {
            Py_DECREF(d);
            return NULL;
        }
        int bad = v != Py_None && PyDict_SetItemString(d, dkpy_camera_fields[f], v) < 0;
        Py_DECREF(v);
        if (bad) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

static PyObject *camera_to_dict(PyObject *obj, PyObject *noargs)
{
    (void)noargs;
    return camera_dict(&((dkpy_Camera *)obj)->cam);
}

static PyObject *camera_repr(PyObject *obj)
{
    const dk_camera *c = &((dkpy_Camera *)obj)->cam;
    PyObject *parts = PyList_New(0);
    if (!parts) return NULL;
    for (int f = 0; f < CF_COUNT; f++) {
        PyObject *v = camera_field(c, f);
        if (!v) goto fail;
        if (v == Py_None) {
            Py_DECREF(v);
            continue;
        }
        PyObject *item = f == CF_MODEL ? PyUnicode_FromFormat("%R", v)
                                       : PyUnicode_FromFormat("%s=%R", dkpy_camera_fields[f], v);
        Py_DECREF(v);
        if (!item) goto fail;
        int bad = PyList_Append(parts, item) < 0;
        Py_DECREF(item);
        if (bad) goto fail;
    }
    PyObject *sep = PyUnicode_FromString(", ");
    if (!sep) goto fail;
    PyObject *body = PyUnicode_Join(sep, parts);
    Py_DECREF(sep);
    Py_DECREF(parts);
    if (!body) return NULL;
    PyObject *name = PyType_GetName(Py_TYPE(obj));
    if (!name) {
        Py_DECREF(body);
        return NULL;
    }
    PyObject *r = PyUnicode_FromFormat("%U(%U)", name, body);
    Py_DECREF(name);
    Py_DECREF(body);
    return r;
fail:
    Py_DECREF(parts);
    return NULL;
}

/* A C-contiguous float64 buffer of shape (N, cols). */
static int rows_arg(dkpy_state *st, PyObject *obj, int cols, const char *what, Py_buffer *view,
                    int64_t *n)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_BufferError) && !PyErr_ExceptionMatches(PyExc_TypeError))
            return -1;
        PyErr_Clear();
        dkpy_invalid(st, "%s must be a C-contiguous float64 array of shape (N, %d) (use "
                         "drivekit.camera, which converts)", what, cols);
        return -1;
    }
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=' || *f == '<') f++;
    if (strcmp(f, "d") != 0 || view->itemsize != 8 || view->ndim != 2 || !view->shape ||
        view->shape[1] != cols) {
        PyBuffer_Release(view);
        dkpy_invalid(st, "%s must be a C-contiguous float64 array of shape (N, %d)", what, cols);
        return -1;
    }
    *n = (int64_t)view->shape[0];
    return 0;
}

enum { CAM_PROJECT, CAM_UNPROJECT, CAM_SHUTTER };

typedef struct {
    dk_camera cam;
    int op;
    const double *in;
    double *out;
    double *jac;          /* CAM_PROJECT, optional */
    uint8_t *valid;       /* not for CAM_SHUTTER */
} dkpy_cam_job;

static void cam_range(void *ctx, int64_t begin, int64_t end, int ith)
{
    (void)ith;
    const dkpy_cam_job *j = ctx;
    const dk_camera *c = &j->cam;
    for (int64_t i = begin; i < end; i++) {
        switch (j->op) {
        case CAM_PROJECT: {
            double uv[2] = {NAN, NAN};
            double J[6] = {NAN, NAN, NAN, NAN, NAN, NAN};
            int ok = dk_camera_project(c, j->in + 3 * i, uv, j->jac ? J : NULL);
            j->out[2 * i] = uv[0];
            j->out[2 * i + 1] = uv[1];
            if (j->jac) memcpy(j->jac + 6 * i, J, sizeof J);
            j->valid[i] = (uint8_t)(ok != 0);
            break;
        }
        case CAM_UNPROJECT: {
            double r[3];
            int ok = dk_camera_unproject(c, j->in + 2 * i, r);
            if (!ok) r[0] = r[1] = r[2] = NAN;
            memcpy(j->out + 3 * i, r, sizeof r);
            j->valid[i] = (uint8_t)(ok != 0);
            break;
        }
        default:
            j->out[i] = dk_camera_shutter_time(c, j->in + 2 * i);
            break;
        }
    }
}

/* Shared body of _project, _unproject and _shutter_time. */
static PyObject *camera_batch(PyObject *obj, int op, PyObject *input, int want_jac,
                              PyObject *threads)
{
    dkpy_state *st = state_of_derived(Py_TYPE(obj));
    if (!st) return NULL;
    int cols = op == CAM_PROJECT ? 3 : 2;
    Py_buffer view;
    int64_t n;
    if (rows_arg(st, input, cols, op == CAM_PROJECT ? "points" : "uv", &view, &n) < 0)
        return NULL;
    dkpy_pool_arg pa;
    if (pool_arg(st, threads, &pa) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    dkpy_cam_job job;
    job.cam = ((dkpy_Camera *)obj)->cam;
    job.op = op;
    job.in = (const double *)view.buf;
    dk_tensor out, jac, valid;
    memset(&out, 0, sizeof out);
    memset(&jac, 0, sizeof jac);
    memset(&valid, 0, sizeof valid);
    int64_t shape_out[2] = {n, op == CAM_PROJECT ? 2 : 3};
    int64_t shape_jac[3] = {n, 2, 3};
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = op == CAM_SHUTTER ? dk_tensor_alloc(&out, DK_F64, 1, shape_out)
                           : dk_tensor_alloc(&out, DK_F64, 2, shape_out);
    if (rc == DK_OK && op != CAM_SHUTTER) rc = dk_tensor_alloc(&valid, DK_BOOL, 1, shape_out);
    if (rc == DK_OK && want_jac) rc = dk_tensor_alloc(&jac, DK_F64, 3, shape_jac);
    if (rc == DK_OK) {
        job.out = (double *)out.data;
        job.jac = want_jac ? (double *)jac.data : NULL;
        job.valid = (uint8_t *)valid.data;
        rc = dk_pool_for(pa.pool, n, 4096, cam_range, &job);
    }
    if (rc != DK_OK) {
        msg_grab(&msg);
        dk_tensor_release(&out);
        dk_tensor_release(&jac);
        dk_tensor_release(&valid);
    }
    pool_arg_done(&pa);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    PyObject *o = tensor_wrap(st, &out);
    if (op == CAM_SHUTTER) return o;
    PyObject *v = tensor_wrap(st, &valid);
    PyObject *J = want_jac ? tensor_wrap(st, &jac) : Py_NewRef(Py_None);
    if (!o || !v || !J) {
        Py_XDECREF(o);
        Py_XDECREF(v);
        Py_XDECREF(J);
        return NULL;
    }
    return op == CAM_PROJECT ? Py_BuildValue("(NNN)", o, J, v) : Py_BuildValue("(NN)", o, v);
}

static PyObject *camera_project(PyObject *obj, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"points", "jacobian", "threads", NULL};
    PyObject *points, *threads = NULL;
    int jacobian = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|pO:_project", kwlist, &points, &jacobian,
                                     &threads))
        return NULL;
    return camera_batch(obj, CAM_PROJECT, points, jacobian, threads);
}

static PyObject *camera_unproject(PyObject *obj, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"uv", "threads", NULL};
    PyObject *uv, *threads = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:_unproject", kwlist, &uv, &threads))
        return NULL;
    return camera_batch(obj, CAM_UNPROJECT, uv, 0, threads);
}

static PyObject *camera_shutter_time(PyObject *obj, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"uv", "threads", NULL};
    PyObject *uv, *threads = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:_shutter_time", kwlist, &uv, &threads))
        return NULL;
    return camera_batch(obj, CAM_SHUTTER, uv, 0, threads);
}

static PyObject *camera_pixel_rays(PyObject *obj, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"threads", NULL};
    PyObject *threads = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:_pixel_rays", kwlist, &threads)) return NULL;
    dkpy_state *st = state_of_derived(Py_TYPE(obj));
    if (!st) return NULL;
    dkpy_pool_arg pa;
    if (pool_arg(st, threads, &pa) < 0) return NULL;
    dk_camera cam = ((dkpy_Camera *)obj)->cam;
    int64_t shape[3] = {cam.height, cam.width, 3};
    dk_tensor rays, valid;
    memset(&rays, 0, sizeof rays);
    memset(&valid, 0, sizeof valid);
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_tensor_alloc(&rays, DK_F32, 3, shape);
    if (rc == DK_OK) rc = dk_tensor_alloc(&valid, DK_BOOL, 2, shape);
    if (rc == DK_OK) rc = dk_camera_pixel_rays(&cam, pa.pool, (float *)rays.data,
                                               (uint8_t *)valid.data);
    if (rc != DK_OK) {
        msg_grab(&msg);
        dk_tensor_release(&rays);
        dk_tensor_release(&valid);
    }
    pool_arg_done(&pa);
    Py_END_ALLOW_THREADS
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    PyObject *r = tensor_wrap(st, &rays);
    PyObject *v = tensor_wrap(st, &valid);
    if (!r || !v) {
        Py_XDECREF(r);
        Py_XDECREF(v);
        return NULL;
    }
    return Py_BuildValue("(NN)", r, v);
}

static PyGetSetDef camera_getset[] = {
    {"model", camera_get, NULL, "\"pinhole\", \"opencv\", \"fisheye\" or \"ftheta\".",
     (void *)(intptr_t)CF_MODEL},
    {"width", camera_get, NULL, "Image width in pixels.", (void *)(intptr_t)CF_WIDTH},
    {"height", camera_get, NULL, "Image height in pixels.", (void *)(intptr_t)CF_HEIGHT},
    {"fx", camera_get, NULL, "Focal length in x, pixels (None for ftheta).",
     (void *)(intptr_t)CF_FX},
    {"fy", camera_get, NULL, "Focal length in y, pixels (None for ftheta).",
     (void *)(intptr_t)CF_FY},
    {"cx", camera_get, NULL,
     "Principal point x in drivekit's continuous pixel coordinates (OpenCV's cx + 0.5).",
     (void *)(intptr_t)CF_CX},
    {"cy", camera_get, NULL,
     "Principal point y in drivekit's continuous pixel coordinates (OpenCV's cy + 0.5).",
     (void *)(intptr_t)CF_CY},
    {"k", camera_get, NULL,
     "Radial coefficients: k1..k6 (opencv), k1..k4 (fisheye); None otherwise.",
     (void *)(intptr_t)CF_K},
    {"p", camera_get, NULL, "Tangential (p1, p2) (opencv); None otherwise.",
     (void *)(intptr_t)CF_P},
    {"s", camera_get, NULL, "Thin prism (s1..s4) (opencv); None otherwise.",
     (void *)(intptr_t)CF_S},
    {"reference", camera_get, NULL,
     "Calibrated f-theta direction, \"angle_to_pixeldist\" or \"pixeldist_to_angle\"; None "
     "for other models.", (void *)(intptr_t)CF_REFERENCE},
    {"fw_poly", camera_get, NULL,
     "f-theta angle (rad) -> pixel distance polynomial c0..c5; None for other models.",
     (void *)(intptr_t)CF_FW_POLY},
    {"bw_poly", camera_get, NULL,
     "f-theta pixel distance -> angle (rad) polynomial c0..c5; None for other models.",
     (void *)(intptr_t)CF_BW_POLY},
    {"linear_cde", camera_get, NULL,
     "f-theta linear term (c, d, e) of A = [[c, d], [e, 1]]; None for other models.",
     (void *)(intptr_t)CF_LINEAR_CDE},
    {"max_angle", camera_get, NULL,
     "Largest valid angle from the optical axis, radians (fisheye, ftheta); None otherwise.",
     (void *)(intptr_t)CF_MAX_ANGLE},
    {"shutter", camera_get, NULL,
     "Rolling-shutter readout: \"global\", \"top_to_bottom\", \"bottom_to_top\", "
     "\"left_to_right\" or \"right_to_left\".", (void *)(intptr_t)CF_SHUTTER},
    {"margin", camera_get, NULL,
     "Fraction of (width, height) outside the image that still counts as valid.",
     (void *)(intptr_t)CF_MARGIN},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef camera_methods[] = {
    {"to_dict", camera_to_dict, METH_NOARGS,
     "to_dict() -> dict\n\nThe parameters of the camera's model; Camera(**d) rebuilds it."},
    {"_project", DKPY_KW(camera_project),
     "_project(points, jacobian=False, threads=1) -> (uv, J or None, valid) Tensors\n\n"
     "points: C-contiguous float64 (N, 3). uv (N, 2) float64 (NaN where the model is\n"
     "undefined), J (N, 2, 3) float64, valid (N,) bool."},
    {"_unproject", DKPY_KW(camera_unproject),
     "_unproject(uv, threads=1) -> (rays, valid) Tensors\n\n"
     "uv: C-contiguous float64 (N, 2). rays (N, 3) float64 unit (NaN where invalid)."},
    {"_shutter_time", DKPY_KW(camera_shutter_time),
     "_shutter_time(uv, threads=1) -> Tensor (N,) float64"},
    {"_pixel_rays", DKPY_KW(camera_pixel_rays),
     "_pixel_rays(threads=1) -> (rays (H, W, 3) float32, valid (H, W) bool) Tensors"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot camera_slots[] = {
    {Py_tp_doc, (void *)"Camera(model, *, width, height, fx, fy, cx, cy, k=None, p=None, s=None,\n"
                        "       reference=None, fw_poly=None, bw_poly=None, linear_cde=None,\n"
                        "       max_angle=0.0, margin=0.0, shutter='global')\n\n"
                        "A validated camera model (dk_camera). Immutable. Use drivekit.camera.Camera,\n"
                        "which adds the numpy-facing methods and named constructors."},
    {Py_tp_new, (void *)camera_new},
    {Py_tp_dealloc, (void *)camera_dealloc},
    {Py_tp_repr, (void *)camera_repr},
    {Py_tp_getset, camera_getset},
    {Py_tp_methods, camera_methods},
    {0, NULL},
};

static PyType_Spec camera_spec = {
    .name = "drivekit._drivekit.Camera",
    .basicsize = sizeof(dkpy_Camera),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_BASETYPE,
    .slots = camera_slots,
};

/* ------------------------------------------------------------------------ */
/* Lidar patterns and rigs                                                   */

static PyObject *lidar_dict(const dk_lidar_model *m)
{
    int nb = m->n_beams < 0 ? 0 : m->n_beams > DK_LIDAR_MAX_BEAMS ? DK_LIDAR_MAX_BEAMS : m->n_beams;
    PyObject *el = double_tuple(m->elevation, nb);
    PyObject *az = el ? double_tuple(m->azimuth_offset, nb) : NULL;
    if (!el || !az) {
        Py_XDECREF(el);
        return NULL;
    }
    return Py_BuildValue("{s:i,s:i,s:d,s:i,s:d,s:d,s:d,s:N,s:N}", "n_beams", m->n_beams,
                         "n_columns", m->n_columns, "spin_hz", m->spin_hz, "direction",
                         m->direction, "azimuth_start", m->azimuth_start, "min_range",
                         m->min_range, "max_range", m->max_range, "elevation", el,
                         "azimuth_offset", az);
}

/* A lidar model from a preset number (32, 64, 128) or a mapping with the keys
 * lidar_dict writes (azimuth_start and azimuth_offset optional); validated. */
static int lidar_arg(dkpy_state *st, PyObject *obj, dk_lidar_model *m)
{
    memset(m, 0, sizeof *m);
    int rc;
    if (PyLong_Check(obj)) {
        int overflow = 0;
        long v = PyLong_AsLongAndOverflow(obj, &overflow);
        if (v == -1 && PyErr_Occurred()) return -1;
        if (overflow || v < INT32_MIN || v > INT32_MAX) v = 0;
        rc = dk_lidar_model_preset(m, (dk_lidar_preset)v);
        if (rc != DK_OK) {
            dkpy_raise(st, rc, NULL);
            return -1;
        }
        return 0;
    }
    if (!PyMapping_Check(obj) || PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "lidar model must be a preset (32, 64, 128) or a dict like lidar_preset()'s, "
                     "not %.100s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    static const char *const keys[] = {"n_beams", "n_columns", "spin_hz", "direction",
                                       "azimuth_start", "min_range", "max_range", "elevation",
                                       "azimuth_offset"};
    PyObject *v[9] = {NULL};
    int ret = -1;
    for (int i = 0; i < 9; i++) {
        PyObject *key = PyUnicode_FromString(keys[i]);
        if (!key) goto done;
        int has = PyMapping_HasKey(obj, key);
        v[i] = has ? PyObject_GetItem(obj, key) : NULL;
        Py_DECREF(key);
        if (has && !v[i]) goto done;
        if (!has && i != 4 && i != 8) {
            dkpy_invalid(st, "lidar model: missing key '%s'", keys[i]);
            goto done;
        }
    }
    if (int_arg(st, v[0], "n_beams", &m->n_beams) < 0 ||
        int_arg(st, v[1], "n_columns", &m->n_columns) < 0 ||
        double_arg(v[2], "spin_hz", &m->spin_hz) < 0 ||
        int_arg(st, v[3], "direction", &m->direction) < 0 ||
        (v[4] && double_arg(v[4], "azimuth_start", &m->azimuth_start) < 0) ||
        double_arg(v[5], "min_range", &m->min_range) < 0 ||
        double_arg(v[6], "max_range", &m->max_range) < 0)
        goto done;
    if (m->n_beams < 1 || m->n_beams > DK_LIDAR_MAX_BEAMS) {
        dkpy_invalid(st, "lidar model: n_beams = %d outside [1, %d]", m->n_beams,
                     DK_LIDAR_MAX_BEAMS);
        goto done;
    }
    if (doubles_arg(st, v[7], "elevation", m->elevation, m->n_beams, 1) < 0) goto done;
    if (v[8] && v[8] != Py_None &&
        doubles_arg(st, v[8], "azimuth_offset", m->azimuth_offset, m->n_beams, 1) < 0)
        goto done;
    rc = dk_lidar_model_validate(m);
    if (rc != DK_OK) {
        dkpy_raise(st, rc, NULL);
        goto done;
    }
    ret = 0;
done:
    for (int i = 0; i < 9; i++) Py_XDECREF(v[i]);
    return ret;
}

static PyObject *py_lidar_preset(PyObject *module, PyObject *arg)
{
    dkpy_state *st = state_of_module(module);
    dk_lidar_model m;
    if (!PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "lidar_preset: n_beams must be an int, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    if (lidar_arg(st, arg, &m) < 0) return NULL;
    return lidar_dict(&m);
}

static PyObject *py_lidar_rays(PyObject *module, PyObject *arg)
{
    dkpy_state *st = state_of_module(module);
    dk_lidar_model m;
    if (lidar_arg(st, arg, &m) < 0) return NULL;
    int64_t shape[3] = {m.n_beams, m.n_columns, 3};
    dk_tensor dirs, times;
    memset(&dirs, 0, sizeof dirs);
    memset(&times, 0, sizeof times);
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_tensor_alloc(&dirs, DK_F64, 3, shape);
    if (rc == DK_OK) rc = dk_tensor_alloc(&times, DK_F64, 1, shape + 1);
    if (rc == DK_OK) {
        double *d = (double *)dirs.data, *t = (double *)times.data;
        for (int b = 0; b < m.n_beams; b++)
            for (int c = 0; c < m.n_columns; c++)
                dk_lidar_ray(&m, b, c, d + 3 * ((int64_t)b * m.n_columns + c), b ? NULL : &t[c]);
    } else {
        msg_grab(&msg);
        dk_tensor_release(&dirs);
        dk_tensor_release(&times);
    }
    Py_END_ALLOW_THREADS
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    PyObject *d = tensor_wrap(st, &dirs);
    PyObject *t = tensor_wrap(st, &times);
    if (!d || !t) {
        Py_XDECREF(d);
        Py_XDECREF(t);
        return NULL;
    }
    return Py_BuildValue("(NN)", d, t);
}

static PyObject *rig_sensor_dict(const dk_rig_sensor *s)
{
    double m[16];
    dk_pose_to_matrix(&s->sensor_to_ego, m);
    PyObject *mat = double_tuple(m, 16);
    PyObject *q = double_tuple(s->sensor_to_ego.q, 4);
    PyObject *t = double_tuple(s->sensor_to_ego.t, 3);
    PyObject *cam = s->kind == DK_SENSOR_CAMERA ? camera_dict(&s->camera) : Py_NewRef(Py_None);
    PyObject *lid = s->kind == DK_SENSOR_LIDAR ? lidar_dict(&s->lidar) : Py_NewRef(Py_None);
    if (!mat || !q || !t || !cam || !lid) {
        Py_XDECREF(mat);
        Py_XDECREF(q);
        Py_XDECREF(t);
        Py_XDECREF(cam);
        Py_XDECREF(lid);
        return NULL;
    }
    return Py_BuildValue("{s:s,s:s,s:N,s:N,s:N,s:d,s:d,s:d,s:N,s:N}", "name", s->name, "kind",
                         s->kind == DK_SENSOR_CAMERA ? "camera" : "lidar", "sensor_to_ego", mat,
                         "rotation", q, "translation", t, "rate_hz", s->rate_hz, "time_offset",
                         s->time_offset, "readout_time", s->readout_time, "camera", cam, "lidar",
                         lid);
}

static PyObject *py_rig_nuscenes(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"width", "height", NULL};
    dkpy_state *st = state_of_module(module);
    int width = 1600, height = 900;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|ii:rig_nuscenes", kwlist, &width, &height))
        return NULL;
    if (width < 1 || width > 65536 || height < 1 || height > 65536)
        return dkpy_invalid(st, "nuscenes_rig: size %dx%d outside [1, 65536]", width, height);
    dk_rig *rig = PyMem_Malloc(sizeof *rig);
    if (!rig) return PyErr_NoMemory();
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    dk_rig_nuscenes(rig, width, height);
    rc = dk_rig_validate(rig);
    if (rc != DK_OK) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    if (rc != DK_OK) {
        PyMem_Free(rig);
        return dkpy_raise(st, rc, &msg);
    }
    PyObject *list = PyList_New(rig->n_sensors);
    for (int i = 0; list && i < rig->n_sensors; i++) {
        PyObject *d = rig_sensor_dict(&rig->sensors[i]);
        if (!d) Py_CLEAR(list);
        else PyList_SET_ITEM(list, i, d);
    }
    PyMem_Free(rig);
    return list;
}

/* ------------------------------------------------------------------------ */
/* Ragged batches (drivekit.ragged)                                          */
/*
 * Thin calls into dk_ragged_*: drivekit/ragged.py allocates every output with
 * torch and hands tensors over as numpy views (buffer protocol, strided, no
 * copy), so these functions only convert buffers to dk_tensor views, release
 * the GIL around the C call and map errors. A ragged argument is a tuple
 * (data, sizes or None, batch_dims, dim); sizes is a C-contiguous int64
 * buffer (written by the functions that produce sizes).
 */

#define RG_MAX_BUFS 24

typedef struct {
    Py_buffer views[RG_MAX_BUFS];
    int n;
    dk_tensor *list;             /* PyMem, for one list argument */
    Py_buffer *lviews;           /* the list items' buffers, held for the call */
    Py_ssize_t nl;
} rg_args;

static void rg_release(rg_args *a)
{
    for (int i = 0; i < a->n; i++) PyBuffer_Release(&a->views[i]);
    a->n = 0;
    for (Py_ssize_t i = 0; i < a->nl; i++) PyBuffer_Release(&a->lviews[i]);
    a->nl = 0;
    PyMem_Free(a->list);
    PyMem_Free(a->lviews);
    a->list = NULL;
    a->lviews = NULL;
}

/* Bytes of the buffer taken last. */
static Py_ssize_t rg_last_len(const rg_args *a)
{
    return a->n ? a->views[a->n - 1].len : 0;
}

static dk_dtype rg_dtype(const Py_buffer *v)
{
    const char *f = v->format ? v->format : "B";
    if (*f == '@' || *f == '=' || *f == '<' || *f == '|') f++;
    if (!f[0] || f[1]) return DK_DTYPE_INVALID;
    Py_ssize_t sz = v->itemsize;
    switch (*f) {
    case 'f': return sz == 4 ? DK_F32 : DK_DTYPE_INVALID;
    case 'd': return sz == 8 ? DK_F64 : DK_DTYPE_INVALID;
    case 'e': return sz == 2 ? DK_F16 : DK_DTYPE_INVALID;
    case '?': return sz == 1 ? DK_BOOL : DK_DTYPE_INVALID;
    case 'b': case 'h': case 'i': case 'l': case 'q':
        return sz == 1 ? DK_I8 : sz == 2 ? DK_I16 : sz == 4 ? DK_I32 : sz == 8 ? DK_I64
                                                                              : DK_DTYPE_INVALID;
    case 'B': case 'H': case 'I': case 'L': case 'Q':
        return sz == 1 ? DK_U8 : sz == 2 ? DK_U16 : sz == 4 ? DK_U32 : sz == 8 ? DK_U64
                                                                              : DK_DTYPE_INVALID;
    default: return DK_DTYPE_INVALID;
    }
}

/* Any strided buffer (numpy array, a CPU torch tensor's .numpy()) as a
 * borrowed dk_tensor. */
static int rg_tensor(dkpy_state *st, rg_args *a, PyObject *obj, const char *what, int writable,
                     dk_tensor *t)
{
    if (a->n >= RG_MAX_BUFS) {
        PyErr_SetString(PyExc_SystemError, "ragged: too many buffers");
        return -1;
    }
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError, "ragged: %s must be an array (buffer protocol), not %.100s",
                     what, Py_TYPE(obj)->tp_name);
        return -1;
    }
    Py_buffer *v = &a->views[a->n];
    if (PyObject_GetBuffer(obj, v, PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    a->n++;
    dk_dtype dt = rg_dtype(v);
    if (dt == DK_DTYPE_INVALID) {
        dkpy_invalid(st, "ragged: %s has unsupported element format '%s'", what,
                     v->format ? v->format : "B");
        return -1;
    }
    if (v->ndim > DK_MAX_DIMS) {
        dkpy_invalid(st, "ragged: %s has %d dims, at most %d", what, v->ndim, DK_MAX_DIMS);
        return -1;
    }
    memset(t, 0, sizeof *t);
    t->data = v->buf;
    t->dtype = dt;
    t->ndim = v->ndim;
    for (int i = 0; i < v->ndim; i++) {
        t->shape[i] = (int64_t)v->shape[i];
        Py_ssize_t bs = v->strides ? v->strides[i] : 0;
        if (bs % v->itemsize) {
            dkpy_invalid(st, "ragged: %s has a stride of %zd bytes, not a multiple of %zd", what,
                         bs, v->itemsize);
            return -1;
        }
        t->strides[i] = (int64_t)(bs / v->itemsize);
    }
    if (!v->strides) {   /* C-contiguous */
        int64_t s = 1;
        for (int i = v->ndim - 1; i >= 0; i--) {
            t->strides[i] = s;
            s *= t->shape[i];
        }
    }
    return 0;
}

static int rg_opt_tensor(dkpy_state *st, rg_args *a, PyObject *obj, const char *what, int writable,
                         dk_tensor *t, dk_tensor **out)
{
    *out = NULL;
    if (obj == Py_None) return 0;
    if (rg_tensor(st, a, obj, what, writable, t) < 0) return -1;
    *out = t;
    return 0;
}

/* A C-contiguous 1-D buffer of n (>= 0; -1 = any) elements of dtype dt. */
static int rg_flat(dkpy_state *st, rg_args *a, PyObject *obj, const char *what, int writable,
                   dk_dtype dt, Py_ssize_t n, void **out)
{
    dk_tensor t;
    if (rg_tensor(st, a, obj, what, writable, &t) < 0) return -1;
    Py_buffer *v = &a->views[a->n - 1];
    if (t.dtype != dt || t.ndim != 1 || !PyBuffer_IsContiguous(v, 'C') ||
        (n >= 0 && t.shape[0] != n)) {
        dkpy_invalid(st, "ragged: %s must be a contiguous 1-D %s array%s", what, dk_dtype_name(dt),
                     n >= 0 ? " of the right length" : "");
        return -1;
    }
    *out = v->buf;
    return 0;
}

static int rg_ragged(dkpy_state *st, rg_args *a, PyObject *obj, const char *what, int writable,
                     int wsizes, dk_ragged *r)
{
    PyObject *data, *sizes;
    int nb, dim;
    if (!PyTuple_Check(obj) || !PyArg_ParseTuple(obj, "OOii", &data, &sizes, &nb, &dim)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "ragged: %s must be a (data, sizes, batch_dims, dim) tuple",
                     what);
        return -1;
    }
    memset(r, 0, sizeof *r);
    if (rg_tensor(st, a, data, what, writable, &r->data) < 0) return -1;
    if (sizes != Py_None) {
        void *p;
        if (rg_flat(st, a, sizes, what, wsizes, DK_I64, -1, &p) < 0) return -1;
        int64_t ns = 1;
        for (int i = 0; i < nb && i < r->data.ndim; i++) ns *= r->data.shape[i];
        if (rg_last_len(a) / 8 < ns) {
            dkpy_invalid(st, "ragged: %s: %zd sizes for %lld samples", what, rg_last_len(a) / 8,
                         (long long)ns);
            return -1;
        }
        r->sizes = p;
    }
    r->batch_dims = nb;
    r->dim = dim;
    return 0;
}

static int rg_opt_ragged(dkpy_state *st, rg_args *a, PyObject *obj, const char *what,
                         int writable, int wsizes, dk_ragged *r, dk_ragged **out)
{
    *out = NULL;
    if (obj == Py_None) return 0;
    if (rg_ragged(st, a, obj, what, writable, wsizes, r) < 0) return -1;
    *out = r;
    return 0;
}

/* A list of arrays as an array of dk_tensor views (a->list). */
static int rg_list(dkpy_state *st, rg_args *a, PyObject *obj, const char *what, Py_ssize_t *n)
{
    PyObject *seq = PySequence_Fast(obj, "ragged: expected a list of arrays");
    if (!seq) return -1;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
    a->list = PyMem_Calloc((size_t)(len ? len : 1), sizeof(dk_tensor));
    a->lviews = PyMem_Calloc((size_t)(len ? len : 1), sizeof(Py_buffer));
    if (!a->list || !a->lviews) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        Py_buffer *v = &a->lviews[i];
        if (PyObject_GetBuffer(item, v, PyBUF_STRIDES | PyBUF_FORMAT) < 0) {
            Py_DECREF(seq);
            return -1;
        }
        a->nl++;
        dk_tensor *t = &a->list[i];
        dk_dtype dt = rg_dtype(v);
        if (dt == DK_DTYPE_INVALID || v->ndim > DK_MAX_DIMS) {
            Py_DECREF(seq);
            dkpy_invalid(st, "ragged: %s[%zd] has an unsupported dtype or too many dims", what, i);
            return -1;
        }
        t->data = v->buf;
        t->dtype = dt;
        t->ndim = v->ndim;
        int64_t s = 1;
        for (int d = v->ndim - 1; d >= 0; d--) {
            t->shape[d] = (int64_t)v->shape[d];
            t->strides[d] = v->strides ? (int64_t)(v->strides[d] / v->itemsize) : s;
            s *= t->shape[d];
        }
    }
    Py_DECREF(seq);
    *n = len;
    return 0;
}

#define RG_RUN(st, A, threads, call)                                                      \
    do {                                                                                  \
        dkpy_pool_arg pa_;                                                                \
        if (pool_arg((st), (threads), &pa_) < 0) {                                        \
            rg_release(&(A));                                                             \
            return NULL;                                                                  \
        }                                                                                 \
        dk_pool *pool = pa_.pool;                                                         \
        int rc_;                                                                          \
        dkpy_msg msg_ = {{0}};                                                            \
        Py_BEGIN_ALLOW_THREADS                                                            \
        rc_ = (call);                                                                     \
        if (rc_ != DK_OK) msg_grab(&msg_);                                                \
        pool_arg_done(&pa_);                                                              \
        Py_END_ALLOW_THREADS                                                              \
        (void)pool;                                                                       \
        rg_release(&(A));                                                                 \
        if (rc_ != DK_OK) return dkpy_raise((st), rc_, &msg_);                            \
    } while (0)

#define RG_FAIL(A)          \
    do {                    \
        rg_release(&(A));   \
        return NULL;        \
    } while (0)

static PyObject *py_ragged_index_map(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *o[4], *threads = Py_None;
    int mode;
    if (!PyArg_ParseTuple(args, "OOOOi|O:ragged_index_map", &o[0], &o[1], &o[2], &o[3], &mode,
                          &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_ragged src, si, dst, di, *psi, *pdi;
    if (rg_ragged(st, &A, o[0], "src", 0, 0, &src) < 0 ||
        rg_opt_ragged(st, &A, o[1], "src_idx", 0, 0, &si, &psi) < 0 ||
        rg_ragged(st, &A, o[2], "dst", 1, 0, &dst) < 0 ||
        rg_opt_ragged(st, &A, o[3], "dst_idx", 0, 0, &di, &pdi) < 0)
        RG_FAIL(A);
    RG_RUN(st, A, threads, dk_ragged_index_map(pool, &src, psi, &dst, pdi, (dk_ragged_mode)mode));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_index_access(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *in, *idx, *out, *threads = Py_None;
    double filler;
    if (!PyArg_ParseTuple(args, "OOdO|O:ragged_index_access", &in, &idx, &filler, &out, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_ragged rin, ridx, rout;
    if (rg_ragged(st, &A, in, "input", 0, 0, &rin) < 0 ||
        rg_ragged(st, &A, idx, "indices", 0, 0, &ridx) < 0 ||
        rg_ragged(st, &A, out, "out", 1, 1, &rout) < 0)
        RG_FAIL(A);
    RG_RUN(st, A, threads, dk_ragged_index_access(pool, &rin, &ridx, filler, &rout));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_index_access_backward(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *go, *idx, *gi, *threads = Py_None;
    if (!PyArg_ParseTuple(args, "OOO|O:ragged_index_access_backward", &go, &idx, &gi, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_ragged rgo, ridx, rgi;
    if (rg_ragged(st, &A, go, "grad_out", 0, 0, &rgo) < 0 ||
        rg_ragged(st, &A, idx, "indices", 0, 0, &ridx) < 0 ||
        rg_ragged(st, &A, gi, "grad_in", 1, 0, &rgi) < 0)
        RG_FAIL(A);
    RG_RUN(st, A, threads, dk_ragged_index_access_backward(pool, &rgo, &ridx, &rgi));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_index_write(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *src, *idx, *dst, *threads = Py_None;
    if (!PyArg_ParseTuple(args, "OOO|O:ragged_index_write", &src, &idx, &dst, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_ragged rs, ri, rd;
    if (rg_ragged(st, &A, src, "to_write", 0, 0, &rs) < 0 ||
        rg_ragged(st, &A, idx, "indices", 0, 0, &ri) < 0 ||
        rg_ragged(st, &A, dst, "to_write_into", 1, 0, &rd) < 0)
        RG_FAIL(A);
    RG_RUN(st, A, threads, dk_ragged_index_write(pool, &rs, &ri, &rd));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_index_fill(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *dst, *idx, *threads = Py_None;
    double value;
    if (!PyArg_ParseTuple(args, "OOd|O:ragged_index_fill", &dst, &idx, &value, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_ragged rd, ri;
    if (rg_ragged(st, &A, dst, "dst", 1, 0, &rd) < 0 ||
        rg_ragged(st, &A, idx, "indices", 0, 0, &ri) < 0)
        RG_FAIL(A);
    RG_RUN(st, A, threads, dk_ragged_index_fill(pool, &rd, &ri, value));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_mask_from_indices(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *idx, *mask, *threads = Py_None;
    if (!PyArg_ParseTuple(args, "OO|O:ragged_mask_from_indices", &idx, &mask, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_ragged ri;
    dk_tensor tm;
    if (rg_ragged(st, &A, idx, "indices", 0, 0, &ri) < 0 ||
        rg_tensor(st, &A, mask, "mask", 1, &tm) < 0)
        RG_FAIL(A);
    RG_RUN(st, A, threads, dk_ragged_mask_from_indices(pool, &ri, &tm));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_count_mask(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *mask, *counts, *threads = Py_None;
    int nb, prefix;
    if (!PyArg_ParseTuple(args, "OiOp|O:ragged_count_mask", &mask, &nb, &counts, &prefix, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_tensor tm;
    void *c;
    if (rg_tensor(st, &A, mask, "mask", 0, &tm) < 0 ||
        rg_flat(st, &A, counts, "counts", 1, DK_I64, -1, &c) < 0)
        RG_FAIL(A);
    if (prefix)
        RG_RUN(st, A, threads, dk_ragged_sizes_from_mask(pool, &tm, nb, (int64_t *)c));
    else
        RG_RUN(st, A, threads, dk_ragged_count_mask(pool, &tm, nb, (int64_t *)c));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_indices_from_mask(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *mask, *out, *threads = Py_None;
    int nb;
    if (!PyArg_ParseTuple(args, "OiO|O:ragged_indices_from_mask", &mask, &nb, &out, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_tensor tm;
    dk_ragged ro;
    if (rg_tensor(st, &A, mask, "mask", 0, &tm) < 0 ||
        rg_ragged(st, &A, out, "out", 1, 1, &ro) < 0)
        RG_FAIL(A);
    RG_RUN(st, A, threads, dk_ragged_indices_from_mask(pool, &tm, nb, &ro));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_bool_select(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *in, *mask, *out, *threads = Py_None;
    double filler;
    if (!PyArg_ParseTuple(args, "OOdO|O:ragged_bool_select", &in, &mask, &filler, &out, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_ragged ri, ro;
    dk_tensor tm;
    if (rg_ragged(st, &A, in, "input_data", 0, 0, &ri) < 0 ||
        rg_tensor(st, &A, mask, "mask", 0, &tm) < 0 ||
        rg_ragged(st, &A, out, "out", 1, 1, &ro) < 0)
        RG_FAIL(A);
    RG_RUN(st, A, threads, dk_ragged_bool_select(pool, &ri, &tm, filler, &ro));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_bool_write(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *src, *mask, *dst, *threads = Py_None;
    if (!PyArg_ParseTuple(args, "OOO|O:ragged_bool_write", &src, &mask, &dst, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_ragged rs, rd;
    dk_tensor tm;
    if (rg_ragged(st, &A, src, "to_write", 0, 0, &rs) < 0 ||
        rg_tensor(st, &A, mask, "mask", 0, &tm) < 0 ||
        rg_ragged(st, &A, dst, "to_write_into", 1, 0, &rd) < 0)
        RG_FAIL(A);
    RG_RUN(st, A, threads, dk_ragged_bool_write(pool, &rs, &tm, &rd));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_apply_mask(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *in, *mask, *out, *threads = Py_None;
    int invert;
    double value;
    if (!PyArg_ParseTuple(args, "OOpdO|O:ragged_apply_mask", &in, &mask, &invert, &value, &out,
                          &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_ragged ri;
    dk_tensor tm, to;
    if (rg_ragged(st, &A, in, "data", 0, 0, &ri) < 0 ||
        rg_tensor(st, &A, mask, "mask", 0, &tm) < 0 ||
        rg_tensor(st, &A, out, "out", 1, &to) < 0)
        RG_FAIL(A);
    RG_RUN(st, A, threads, dk_ragged_apply_mask(pool, &ri, &tm, invert, value, &to));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_set_padded(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *r, *threads = Py_None;
    double value;
    if (!PyArg_ParseTuple(args, "Od|O:ragged_set_padded", &r, &value, &threads)) return NULL;
    rg_args A = {.n = 0};
    dk_ragged rr;
    if (rg_ragged(st, &A, r, "data", 1, 0, &rr) < 0) RG_FAIL(A);
    RG_RUN(st, A, threads, dk_ragged_set_padded(pool, &rr, value));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_sum(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *in, *out, *threads = Py_None;
    int average, nans_to_zero, backward;
    if (!PyArg_ParseTuple(args, "OppOp|O:ragged_sum", &in, &average, &nans_to_zero, &out,
                          &backward, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_ragged ri;
    dk_tensor to;
    if (rg_ragged(st, &A, in, backward ? "grad_in" : "data", backward, 0, &ri) < 0 ||
        rg_tensor(st, &A, out, backward ? "grad_out" : "out", !backward, &to) < 0)
        RG_FAIL(A);
    if (backward)
        RG_RUN(st, A, threads, dk_ragged_sum_backward(pool, &to, average, &ri));
    else
        RG_RUN(st, A, threads, dk_ragged_sum(pool, &ri, average, nans_to_zero, &to));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_packed(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *r, *values, *offsets, *threads = Py_None;
    int to_packed;
    double filler;
    if (!PyArg_ParseTuple(args, "pOOOd|O:ragged_packed", &to_packed, &r, &values, &offsets,
                          &filler, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_ragged rr;
    dk_ragged_packed pk = {.offsets = NULL, .n_samples = 0};
    void *off = NULL;
    if (rg_ragged(st, &A, r, "ragged", !to_packed, !to_packed, &rr) < 0 ||
        rg_tensor(st, &A, values, "values", to_packed, &pk.values) < 0 ||
        (offsets != Py_None && rg_flat(st, &A, offsets, "offsets", to_packed, DK_I64, -1, &off) < 0))
        RG_FAIL(A);
    pk.offsets = (int64_t *)off;
    if (off) pk.n_samples = rg_last_len(&A) / 8 - 1;
    if (!to_packed && !off) {
        dkpy_invalid(st, "ragged_packed: offsets are required");
        RG_FAIL(A);
    }
    if (to_packed)
        RG_RUN(st, A, threads, dk_ragged_to_packed(pool, &rr, &pk));
    else
        RG_RUN(st, A, threads, dk_ragged_from_packed(pool, &pk, filler, &rr));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_combine(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *parts, *out, *threads = Py_None;
    int dim;
    double filler;
    if (!PyArg_ParseTuple(args, "OidO|O:ragged_combine", &parts, &dim, &filler, &out, &threads))
        return NULL;
    rg_args A = {.n = 0};
    Py_ssize_t n = 0;
    dk_ragged ro;
    if (rg_list(st, &A, parts, "data_list", &n) < 0 || rg_ragged(st, &A, out, "out", 1, 1, &ro) < 0)
        RG_FAIL(A);
    dk_tensor *list = A.list;
    RG_RUN(st, A, threads, dk_ragged_combine(pool, (int64_t)n, list, dim, filler, &ro));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_assign(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *costs, *ri, *ci, *tot, *threads = Py_None;
    if (!PyArg_ParseTuple(args, "OOOO|O:ragged_assign", &costs, &ri, &ci, &tot, &threads))
        return NULL;
    rg_args A = {.n = 0};
    Py_ssize_t n = 0;
    void *r, *c, *t;
    if (rg_list(st, &A, costs, "costs", &n) < 0 ||
        rg_flat(st, &A, ri, "row_ind", 1, DK_I64, -1, &r) < 0 ||
        rg_flat(st, &A, ci, "col_ind", 1, DK_I64, -1, &c) < 0 ||
        rg_flat(st, &A, tot, "total", 1, DK_F64, n, &t) < 0)
        RG_FAIL(A);
    dk_tensor *list = A.list;
    RG_RUN(st, A, threads,
           dk_ragged_assign(pool, (int64_t)n, list, (int64_t *)r, (int64_t *)c, (double *)t));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_assign_padded(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *costs, *rows, *cols, *ri, *ci, *np_, *tot, *threads = Py_None;
    if (!PyArg_ParseTuple(args, "OOOOOOO|O:ragged_assign_padded", &costs, &rows, &cols, &ri, &ci,
                          &np_, &tot, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_tensor tc;
    void *rs = NULL, *cs = NULL, *r, *c, *p, *t;
    if (rg_tensor(st, &A, costs, "costs", 0, &tc) < 0 ||
        (rows != Py_None && rg_flat(st, &A, rows, "rows", 0, DK_I64, -1, &rs) < 0) ||
        (cols != Py_None && rg_flat(st, &A, cols, "cols", 0, DK_I64, -1, &cs) < 0) ||
        rg_flat(st, &A, ri, "row_ind", 1, DK_I64, -1, &r) < 0 ||
        rg_flat(st, &A, ci, "col_ind", 1, DK_I64, -1, &c) < 0 ||
        rg_flat(st, &A, np_, "n_pairs", 1, DK_I64, -1, &p) < 0 ||
        rg_flat(st, &A, tot, "total", 1, DK_F64, -1, &t) < 0)
        RG_FAIL(A);
    RG_RUN(st, A, threads,
           dk_ragged_assign_padded(pool, &tc, (const int64_t *)rs, (const int64_t *)cs,
                                   (int64_t *)r, (int64_t *)c, (int64_t *)p, (double *)t));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_focal_loss(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *x, *lab, *loss, *grad, *threads = Py_None;
    double alpha, gamma, sum = 0;
    if (!PyArg_ParseTuple(args, "OOddOO|O:ragged_focal_loss", &x, &lab, &alpha, &gamma, &loss,
                          &grad, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_tensor tx, tl, tlo, tg, *plo, *pg;
    if (rg_tensor(st, &A, x, "logits", 0, &tx) < 0 || rg_tensor(st, &A, lab, "labels", 0, &tl) < 0 ||
        rg_opt_tensor(st, &A, loss, "loss", 1, &tlo, &plo) < 0 ||
        rg_opt_tensor(st, &A, grad, "grad", 1, &tg, &pg) < 0)
        RG_FAIL(A);
    RG_RUN(st, A, threads, dk_ragged_focal_loss(pool, &tx, &tl, alpha, gamma, plo, pg, &sum));
    return PyFloat_FromDouble(sum);
}

static PyObject *py_ragged_focal_cost(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *x, *lab, *cost, *grad, *threads = Py_None;
    double alpha, gamma;
    if (!PyArg_ParseTuple(args, "OOddOO|O:ragged_focal_cost", &x, &lab, &alpha, &gamma, &cost,
                          &grad, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_tensor tx, tg;
    dk_ragged rl, rc;
    int backward = grad != Py_None;
    if (rg_tensor(st, &A, x, "logits", 0, &tx) < 0 ||
        rg_ragged(st, &A, lab, "labels", 0, 0, &rl) < 0 ||
        rg_ragged(st, &A, cost, backward ? "grad_cost" : "cost", !backward, !backward, &rc) < 0 ||
        (backward && rg_tensor(st, &A, grad, "grad_logits", 1, &tg) < 0))
        RG_FAIL(A);
    if (backward)
        RG_RUN(st, A, threads, dk_ragged_focal_cost_backward(pool, &tx, &rl, alpha, gamma, &rc, &tg));
    else
        RG_RUN(st, A, threads, dk_ragged_focal_cost(pool, &tx, &rl, alpha, gamma, &rc));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_l1_loss(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *pred, *tgt, *cw, *loss, *grad, *threads = Py_None;
    double beta, sum = 0;
    if (!PyArg_ParseTuple(args, "OOOdOO|O:ragged_l1_loss", &pred, &tgt, &cw, &beta, &loss, &grad,
                          &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_ragged rp;
    dk_tensor tt, tlo, tg, *plo, *pg;
    void *w = NULL;
    if (rg_ragged(st, &A, pred, "pred", 0, 0, &rp) < 0 ||
        rg_tensor(st, &A, tgt, "target", 0, &tt) < 0 ||
        (cw != Py_None &&
         rg_flat(st, &A, cw, "code_weights", 0, DK_F64,
                 rp.data.ndim ? (Py_ssize_t)rp.data.shape[rp.data.ndim - 1] : 0, &w) < 0) ||
        rg_opt_tensor(st, &A, loss, "loss", 1, &tlo, &plo) < 0 ||
        rg_opt_tensor(st, &A, grad, "grad", 1, &tg, &pg) < 0)
        RG_FAIL(A);
    RG_RUN(st, A, threads, dk_ragged_l1_loss(pool, &rp, &tt, (const double *)w, beta, plo, pg, &sum));
    return PyFloat_FromDouble(sum);
}

static PyObject *py_ragged_giou(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *a, *b, *out, *ga, *gb, *threads = Py_None;
    int aligned, backward;
    if (!PyArg_ParseTuple(args, "OOpOpOO|O:ragged_giou", &a, &b, &aligned, &out, &backward, &ga,
                          &gb, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_ragged ra, rb;
    dk_tensor to, tga, tgb, *pga, *pgb;
    if (rg_ragged(st, &A, a, "boxes1", 0, 0, &ra) < 0 || rg_ragged(st, &A, b, "boxes2", 0, 0, &rb) < 0 ||
        rg_tensor(st, &A, out, backward ? "grad_out" : "out", !backward, &to) < 0 ||
        rg_opt_tensor(st, &A, ga, "grad_boxes1", 1, &tga, &pga) < 0 ||
        rg_opt_tensor(st, &A, gb, "grad_boxes2", 1, &tgb, &pgb) < 0)
        RG_FAIL(A);
    if (backward)
        RG_RUN(st, A, threads, dk_ragged_giou_backward(pool, &ra, &rb, aligned, &to, pga, pgb));
    else
        RG_RUN(st, A, threads, dk_ragged_giou(pool, &ra, &rb, aligned, &to));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_box_l1_cost(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *pred, *gt, *cw, *cost, *gp, *gg, *threads = Py_None;
    int ncodes, backward;
    if (!PyArg_ParseTuple(args, "OOOiOpOO|O:ragged_box_l1_cost", &pred, &gt, &cw, &ncodes, &cost,
                          &backward, &gp, &gg, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_tensor tp, tgp, tgg, *pgp, *pgg;
    dk_ragged rg_, rc;
    void *w = NULL;
    if (rg_tensor(st, &A, pred, "pred", 0, &tp) < 0 || rg_ragged(st, &A, gt, "gt", 0, 0, &rg_) < 0 ||
        (cw != Py_None &&
         rg_flat(st, &A, cw, "code_weights", 0, DK_F64,
                 tp.ndim ? (Py_ssize_t)tp.shape[tp.ndim - 1] : 0, &w) < 0) ||
        rg_ragged(st, &A, cost, backward ? "grad_cost" : "cost", !backward, !backward, &rc) < 0 ||
        rg_opt_tensor(st, &A, gp, "grad_pred", 1, &tgp, &pgp) < 0 ||
        rg_opt_tensor(st, &A, gg, "grad_gt", 1, &tgg, &pgg) < 0)
        RG_FAIL(A);
    if (backward)
        RG_RUN(st, A, threads,
               dk_ragged_box_l1_cost_backward(pool, &tp, &rg_, (const double *)w, ncodes, &rc, pgp, pgg));
    else
        RG_RUN(st, A, threads, dk_ragged_box_l1_cost(pool, &tp, &rg_, (const double *)w, ncodes, &rc));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_detr3d_loss(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *x, *bp, *lab, *gt, *cw, *gx, *gb, *match, *layers, *threads = Py_None;
    dk_detr3d_config cfg;
    dk_ragged_detr3d_config_init(&cfg);
    if (!PyArg_ParseTuple(args, "OOOOddddOiOOOO|O:ragged_detr3d_loss", &x, &bp, &lab, &gt,
                          &cfg.cls_weight, &cfg.reg_weight, &cfg.alpha, &cfg.gamma, &cw,
                          &cfg.match_codes, &gx, &gb, &match, &layers, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_tensor tx, tb, tgx, tgb, *pgx, *pgb;
    dk_ragged rl, rgt;
    void *w = NULL, *mt = NULL, *ll = NULL;
    if (rg_tensor(st, &A, x, "cls_logits", 0, &tx) < 0 ||
        rg_tensor(st, &A, bp, "box_preds", 0, &tb) < 0 ||
        rg_ragged(st, &A, lab, "gt_labels", 0, 0, &rl) < 0 ||
        rg_ragged(st, &A, gt, "gt_boxes", 0, 0, &rgt) < 0 ||
        (cw != Py_None &&
         rg_flat(st, &A, cw, "code_weights", 0, DK_F64,
                 tb.ndim ? (Py_ssize_t)tb.shape[tb.ndim - 1] : 0, &w) < 0) ||
        rg_opt_tensor(st, &A, gx, "grad_cls", 1, &tgx, &pgx) < 0 ||
        rg_opt_tensor(st, &A, gb, "grad_box", 1, &tgb, &pgb) < 0)
        RG_FAIL(A);
    int64_t lbq = tx.ndim == 4 ? tx.shape[0] * tx.shape[1] * tx.shape[2] : 0;
    if (match != Py_None) {
        if (rg_flat(st, &A, match, "match", 1, DK_I64, -1, &mt) < 0) RG_FAIL(A);
        if (rg_last_len(&A) / 8 < lbq) {
            dkpy_invalid(st, "ragged_detr3d_loss: match must hold L * B * Q entries");
            RG_FAIL(A);
        }
    }
    if (layers != Py_None) {
        if (rg_flat(st, &A, layers, "layer_losses", 1, DK_F64, -1, &ll) < 0) RG_FAIL(A);
        if (tx.ndim == 4 && rg_last_len(&A) / 8 < 2 * tx.shape[0]) {
            dkpy_invalid(st, "ragged_detr3d_loss: layer_losses must hold 2 L entries");
            RG_FAIL(A);
        }
    }
    cfg.code_weights = (const double *)w;
    double lc = 0, lb = 0;
    RG_RUN(st, A, threads,
           dk_ragged_detr3d_loss(pool, &cfg, &tx, &tb, &rl, &rgt, &lc, &lb, (double *)ll, pgx, pgb,
                                 (int64_t *)mt));
    return Py_BuildValue("(dd)", lc, lb);
}

static PyObject *py_ragged_draw_gaussians(PyObject *m, PyObject *args)
{
    dkpy_state *st = state_of_module(m);
    PyObject *hm, *ctr, *rad, *lab, *threads = Py_None;
    double factor, k;
    if (!PyArg_ParseTuple(args, "OOOOdd|O:ragged_draw_gaussians", &hm, &ctr, &rad, &lab, &factor,
                          &k, &threads))
        return NULL;
    rg_args A = {.n = 0};
    dk_tensor th;
    dk_ragged rc, rr, rl, *prl;
    if (rg_tensor(st, &A, hm, "heatmaps", 1, &th) < 0 || rg_ragged(st, &A, ctr, "centers", 0, 0, &rc) < 0 ||
        rg_ragged(st, &A, rad, "radii", 0, 0, &rr) < 0 ||
        rg_opt_ragged(st, &A, lab, "labels", 0, 0, &rl, &prl) < 0)
        RG_FAIL(A);
    RG_RUN(st, A, threads, dk_ragged_draw_gaussians(pool, &th, &rc, &rr, prl, factor, k));
    Py_RETURN_NONE;
}

static PyObject *py_ragged_gaussian_radius(PyObject *m, PyObject *args)
{
    (void)m;
    double h, w, o;
    if (!PyArg_ParseTuple(args, "ddd:ragged_gaussian_radius", &h, &w, &o)) return NULL;
    return PyFloat_FromDouble(dk_ragged_gaussian_radius(h, w, o));
}

/* ------------------------------------------------------------------------ */
/* Video                                                                     */
/*
 * drivekit._drivekit.Video wraps one dk_video; drivekit/video.py builds the
 * public Decoder and MultiDecoder on it. A dk_video serves several threads at
 * once, so decoding runs without the GIL and concurrent calls on one object
 * are fine. `busy` counts calls in flight (changed only with the GIL held) so
 * that close() never frees a handle another thread is decoding with; calls
 * keep the object itself alive through their own reference.
 */

typedef struct {
    PyObject_HEAD
    dk_video *v;
    dk_video_output output;
    int out_w, out_h;            /* output picture size (RGB24 and NV12) */
    int busy;
} dkpy_Video;

/* Indexed by dk_video_output. */
static const char *const dkpy_video_outputs[] = {"rgb", "yuv", "nv12"};

/* The handle of an open Video; NULL with InvalidArgumentError once closed. */
static dk_video *video_handle(dkpy_state *st, PyObject *obj)
{
    dkpy_Video *self = (dkpy_Video *)obj;
    if (!self->v) {
        dkpy_invalid(st, "the video is closed");
        return NULL;
    }
    return self->v;
}

/* Shape of one output frame: (H, W, 3) for RGB, (H*3/2, W) for NV12 of even
 * size, (bytes,) otherwise (planar YUV, odd-sized NV12). Returns the rank. */
static int video_frame_shape(const dkpy_Video *self, int64_t shape[3])
{
    int64_t fb = (int64_t)dk_video_frame_bytes(self->v);
    int64_t w = self->out_w, h = self->out_h;
    if (self->output == DK_VIDEO_RGB24 && w * h * 3 == fb) {
        shape[0] = h;
        shape[1] = w;
        shape[2] = 3;
        return 3;
    }
    if (self->output == DK_VIDEO_NV12 && w % 2 == 0 && h % 2 == 0 && w * h * 3 / 2 == fb) {
        shape[0] = h * 3 / 2;
        shape[1] = w;
        return 2;
    }
    shape[0] = fb;
    return 1;
}

/* Gives a C-contiguous tensor of frames its frame shape, after `lead` (0 or 1)
 * leading dimensions. */
static void video_shape_tensor(const dkpy_Video *self, dk_tensor *t, int lead)
{
    int64_t fs[3];
    int nd = video_frame_shape(self, fs);
    t->ndim = lead + nd;
    for (int i = 0; i < nd; i++) t->shape[lead + i] = fs[i];
    for (int i = t->ndim; i < DK_MAX_DIMS; i++) t->shape[i] = t->strides[i] = 0;
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->strides[i] = s;
        s *= t->shape[i];
    }
}

/* Integers from a buffer (numpy integer array) of rank `ndim` whose last
 * extent is `cols` (ndim 2), or from a sequence (of `cols`-sequences when
 * ndim is 2). Bools and floats are refused. *out: PyMem, rows * cols values. */
static int video_ints_arg(PyObject *obj, const char *what, int ndim, int cols, int64_t **out,
                          Py_ssize_t *rows)
{
    *out = NULL;
    *rows = 0;
    if (PyObject_CheckBuffer(obj) && !PyBytes_Check(obj) && !PyByteArray_Check(obj)) {
        Py_buffer v;
        if (PyObject_GetBuffer(obj, &v, PyBUF_RECORDS_RO) < 0) return -1;
        const char *f = v.format ? v.format : "B";
        if (*f == '@' || *f == '=' || *f == '<') f++;
        int is_signed = strchr("bhilq", *f) != NULL && *f != '\0';
        int is_unsigned = strchr("BHILQ", *f) != NULL && *f != '\0';
        if ((!is_signed && !is_unsigned) || f[1] != '\0' ||
            (v.itemsize != 1 && v.itemsize != 2 && v.itemsize != 4 && v.itemsize != 8)) {
            PyErr_Format(PyExc_TypeError, "%s must hold integers, got buffer format '%s'", what,
                         v.format ? v.format : "B");
            PyBuffer_Release(&v);
            return -1;
        }
        if (v.ndim != ndim || (ndim == 2 && v.shape[1] != cols)) {
            PyErr_Format(PyExc_ValueError, "%s must have shape %s, got %d dimension(s)", what,
                         ndim == 1 ? "(N,)" : "(N, 2)", v.ndim);
            PyBuffer_Release(&v);
            return -1;
        }
        Py_ssize_t n = v.shape[0], m = ndim == 2 ? cols : 1;
        int64_t *a = PyMem_Malloc((size_t)(n * m > 0 ? n * m : 1) * sizeof *a);
        if (!a) {
            PyBuffer_Release(&v);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            for (Py_ssize_t j = 0; j < m; j++) {
                const char *p = (const char *)v.buf + i * (v.strides ? v.strides[0] : m * v.itemsize) +
                                j * (ndim == 2 ? (v.strides ? v.strides[1] : v.itemsize) : 0);
                int64_t x;
                if (is_signed) {
                    switch (v.itemsize) {
                    case 1: x = *(const int8_t *)p; break;
                    case 2: { int16_t y; memcpy(&y, p, 2); x = y; break; }
                    case 4: { int32_t y; memcpy(&y, p, 4); x = y; break; }
                    default: memcpy(&x, p, 8); break;
                    }
                } else {
                    uint64_t y = 0;
                    switch (v.itemsize) {
                    case 1: y = *(const uint8_t *)p; break;
                    case 2: { uint16_t z; memcpy(&z, p, 2); y = z; break; }
                    case 4: { uint32_t z; memcpy(&z, p, 4); y = z; break; }
                    default: memcpy(&y, p, 8); break;
                    }
                    if (y > (uint64_t)INT64_MAX) {
                        PyMem_Free(a);
                        PyBuffer_Release(&v);
                        PyErr_Format(PyExc_OverflowError, "%s: value does not fit in int64", what);
                        return -1;
                    }
                    x = (int64_t)y;
                }
                a[i * m + j] = x;
            }
        }
        PyBuffer_Release(&v);
        *out = a;
        *rows = n;
        return 0;
    }
    if (PyLong_Check(obj) || PyUnicode_Check(obj) || PyBytes_Check(obj) || PyByteArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a sequence of %s, not %.100s", what,
                     ndim == 1 ? "ints" : "(video, frame) pairs", Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *seq = PySequence_Fast(obj, "");
    if (!seq) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a sequence of %s, not %.100s", what,
                     ndim == 1 ? "ints" : "(video, frame) pairs", Py_TYPE(obj)->tp_name);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), m = ndim == 2 ? cols : 1;
    int64_t *a = PyMem_Malloc((size_t)(n * m > 0 ? n * m : 1) * sizeof *a);
    if (!a) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *row = NULL;
        if (ndim == 2) {
            row = PySequence_Check(item) && !PyUnicode_Check(item) ? PySequence_Fast(item, "") : NULL;
            if (!row || PySequence_Fast_GET_SIZE(row) != cols) {
                Py_XDECREF(row);
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "%s[%zd] must be a (video, frame) pair, not %.100s",
                             what, i, Py_TYPE(item)->tp_name);
                goto fail;
            }
        }
        for (Py_ssize_t j = 0; j < m; j++) {
            PyObject *x = row ? PySequence_Fast_GET_ITEM(row, j) : item;
            PyObject *ix = PyBool_Check(x) ? NULL : PyNumber_Index(x);
            if (!ix) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "%s[%zd] must be an int, not %.100s", what, i,
                             Py_TYPE(x)->tp_name);
                Py_XDECREF(row);
                goto fail;
            }
            int overflow = 0;
            long long val = PyLong_AsLongLongAndOverflow(ix, &overflow);
            Py_DECREF(ix);
            if (overflow || (val == -1 && PyErr_Occurred())) {
                PyErr_Clear();
                PyErr_Format(PyExc_OverflowError, "%s[%zd] does not fit in int64", what, i);
                Py_XDECREF(row);
                goto fail;
            }
            a[i * m + j] = (int64_t)val;
        }
        Py_XDECREF(row);
    }
    Py_DECREF(seq);
    *out = a;
    *rows = n;
    return 0;
fail:
    Py_DECREF(seq);
    PyMem_Free(a);
    return -1;
}

static PyObject *status_list(const int *status, Py_ssize_t n)
{
    PyObject *l = PyList_New(n);
    if (!l) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = PyLong_FromLong(status[i]);
        if (!x) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, i, x);
    }
    return l;
}

static PyObject *video_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "output", "width", "height", "frame_cache_bytes",
                             "packet_cache_bytes", "max_decoders", "decoder_threads", "index", NULL};
    dkpy_state *st = state_of_type(type);
    PyObject *path = NULL, *output = Py_None, *index = Py_None, *index_bytes = NULL;
    int width = 0, height = 0, max_decoders = 0, decoder_threads = 1;
    long long fcache = -1, pcache = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|$OiiLLiiO:Video", kwlist,
                                     PyUnicode_FSConverter, &path, &output, &width, &height,
                                     &fcache, &pcache, &max_decoders, &decoder_threads, &index))
        return NULL;
    dk_video_config cfg;
    dk_video_config_init(&cfg);
    if (output != Py_None) {
        const char *s = PyUnicode_Check(output) ? PyUnicode_AsUTF8(output) : NULL;
        int k = -1;
        for (int i = 0; s && i < 3; i++)
            if (!strcmp(s, dkpy_video_outputs[i])) k = i;
        if (k < 0) {
            Py_DECREF(path);
            if (PyErr_Occurred()) return NULL;
            return dkpy_invalid(st, "Video(): output must be 'rgb', 'yuv' or 'nv12', got %R", output);
        }
        cfg.output = (dk_video_output)k;
    }
    if (index != Py_None && !PyUnicode_FSConverter(index, &index_bytes)) {
        Py_DECREF(path);
        return NULL;
    }
    cfg.out_width = width;
    cfg.out_height = height;
    if (fcache >= 0) cfg.frame_cache_bytes = (size_t)fcache;
    if (pcache >= 0) cfg.packet_cache_bytes = (size_t)pcache;
    if (max_decoders) cfg.max_decoders = max_decoders;
    cfg.decoder_threads = decoder_threads;
    cfg.index_path = index_bytes ? PyBytes_AS_STRING(index_bytes) : NULL;
    const char *cpath = PyBytes_AS_STRING(path);
    dk_video *v = NULL;
    dk_video_info in;
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_video_open(cpath, &cfg, &v);
    if (rc != DK_OK) msg_grab(&msg);
    else dk_video_get_info(v, &in);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    Py_XDECREF(index_bytes);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    dkpy_Video *self = (dkpy_Video *)type->tp_alloc(type, 0);
    if (!self) {
        dk_video_close(v);
        return NULL;
    }
    self->v = v;
    self->output = cfg.output;
    self->busy = 0;
    /* The output size as dk_video_open derives it (video.h, out_width). */
    int w = cfg.output == DK_VIDEO_NATIVE ? 0 : width, h = cfg.output == DK_VIDEO_NATIVE ? 0 : height;
    if (w && !h) h = (int)((int64_t)in.height * w / in.width);
    if (h && !w) w = (int)((int64_t)in.width * h / in.height);
    if (!w || !h) {
        if (width || height) {
            w = w ? w : 1;
            h = h ? h : 1;
        } else {
            w = in.width;
            h = in.height;
        }
    }
    self->out_w = w;
    self->out_h = h;
    return (PyObject *)self;
}

static void video_dealloc(PyObject *obj)
{
    dkpy_Video *self = (dkpy_Video *)obj;
    PyTypeObject *tp = Py_TYPE(obj);
    if (self->v) {
        dk_video *v = self->v;
        self->v = NULL;
        Py_BEGIN_ALLOW_THREADS
        dk_video_close(v);
        Py_END_ALLOW_THREADS
    }
    tp->tp_free(obj);
    Py_DECREF(tp);
}

static PyObject *video_close(PyObject *obj, PyObject *noargs)
{
    (void)noargs;
    dkpy_Video *self = (dkpy_Video *)obj;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Video.close(): another thread is decoding with this video");
        return NULL;
    }
    if (self->v) {
        dk_video *v = self->v;
        self->v = NULL;
        Py_BEGIN_ALLOW_THREADS
        dk_video_close(v);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static PyObject *video_get_closed(PyObject *obj, void *closure)
{
    (void)closure;
    return PyBool_FromLong(((dkpy_Video *)obj)->v == NULL);
}

static PyObject *video_get_path(PyObject *obj, void *closure)
{
    (void)closure;
    dk_video *v = video_handle(state_of_type(Py_TYPE(obj)), obj);
    if (!v) return NULL;
    const char *p = dk_video_path(v);
    return PyUnicode_DecodeFSDefault(p ? p : "");
}

static PyObject *video_get_frame_shape(PyObject *obj, void *closure)
{
    (void)closure;
    if (!video_handle(state_of_type(Py_TYPE(obj)), obj)) return NULL;
    int64_t fs[3];
    int nd = video_frame_shape((dkpy_Video *)obj, fs);
    return int64_tuple(fs, nd);
}

static Py_ssize_t video_len(PyObject *obj)
{
    dk_video *v = video_handle(state_of_type(Py_TYPE(obj)), obj);
    if (!v) return -1;
    dk_video_info in;
    dk_video_get_info(v, &in);
    return (Py_ssize_t)in.n_frames;
}

static PyObject *video_info(PyObject *obj, PyObject *noargs)
{
    (void)noargs;
    dkpy_Video *self = (dkpy_Video *)obj;
    dk_video *v = video_handle(state_of_type(Py_TYPE(obj)), obj);
    if (!v) return NULL;
    dk_video_info in;
    dk_video_get_info(v, &in);
    const char *p = dk_video_path(v);
    PyObject *path = PyUnicode_DecodeFSDefault(p ? p : "");
    if (!path) return NULL;
    return Py_BuildValue(
        "{s:N,s:s,s:s,s:i,s:i,s:i,s:L,s:L,s:i,s:i,s:O,s:O,s:d,s:d,s:s,s:s,s:s,s:i,s:i,s:n}",
        "path", path, "codec", in.codec, "pix_fmt", in.pix_fmt, "width", in.width, "height",
        in.height, "bit_depth", in.bit_depth, "n_frames", (long long)in.n_frames, "n_keyframes",
        (long long)in.n_keyframes, "max_gop", in.max_gop, "has_b_frames", in.has_b_frames,
        "open_gop", in.open_gop ? Py_True : Py_False, "vfr", in.vfr ? Py_True : Py_False, "fps",
        in.avg_fps, "duration", in.duration, "colorspace", in.colorspace_bt709 ? "bt709" : "bt601",
        "color_range", in.full_range ? "full" : "limited", "output",
        dkpy_video_outputs[self->output], "out_width", self->out_w, "out_height", self->out_h,
        "frame_bytes", (Py_ssize_t)dk_video_frame_bytes(v));
}

static PyObject *video_frame_time(PyObject *obj, PyObject *arg)
{
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    dk_video *v = video_handle(st, obj);
    if (!v) return NULL;
    long long f = PyLong_AsLongLong(arg);
    if (f == -1 && PyErr_Occurred()) return NULL;
    int64_t pts;
    double sec;
    int rc = dk_video_frame_time(v, (int64_t)f, &pts, &sec);
    if (rc != DK_OK) return dkpy_raise(st, rc, NULL);
    return Py_BuildValue("(Ld)", (long long)pts, sec);
}

static PyObject *video_frame_cost(PyObject *obj, PyObject *arg)
{
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    dk_video *v = video_handle(st, obj);
    if (!v) return NULL;
    long long f = PyLong_AsLongLong(arg);
    if (f == -1 && PyErr_Occurred()) return NULL;
    int64_t key, cost;
    int rc = dk_video_frame_cost(v, (int64_t)f, &key, &cost);
    if (rc != DK_OK) return dkpy_raise(st, rc, NULL);
    return Py_BuildValue("(LL)", (long long)key, (long long)cost);
}

static PyObject *video_keyframes(PyObject *obj, PyObject *noargs)
{
    (void)noargs;
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    dk_video *v = video_handle(st, obj);
    if (!v) return NULL;
    dk_video_info in;
    dk_video_get_info(v, &in);
    int64_t n = in.n_keyframes;
    int64_t *k = PyMem_Malloc((size_t)(n > 0 ? n : 1) * sizeof *k);
    if (!k) return PyErr_NoMemory();
    int rc = dk_video_keyframes(v, k, &n);
    if (rc != DK_OK) {
        PyMem_Free(k);
        return dkpy_raise(st, rc, NULL);
    }
    PyObject *l = PyList_New((Py_ssize_t)n);
    for (int64_t i = 0; l && i < n; i++) {
        PyObject *x = PyLong_FromLongLong((long long)k[i]);
        if (!x) {
            Py_CLEAR(l);
            break;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, x);
    }
    PyMem_Free(k);
    return l;
}

static PyObject *video_stats(PyObject *obj, PyObject *noargs)
{
    (void)noargs;
    dk_video *v = video_handle(state_of_type(Py_TYPE(obj)), obj);
    if (!v) return NULL;
    dk_video_stats s;
    dk_video_get_stats(v, &s);
    return Py_BuildValue("{s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L}",
                         "requests", (long long)s.requests,
                         "frames_requested", (long long)s.frames_requested,
                         "frames_returned", (long long)s.frames_returned,
                         "packets_read", (long long)s.packets_read,
                         "packets_sent", (long long)s.packets_sent,
                         "packets_skipped", (long long)s.packets_skipped,
                         "frames_decoded", (long long)s.frames_decoded,
                         "min_decodes", (long long)s.min_decodes,
                         "seeks", (long long)s.seeks,
                         "flushes", (long long)s.flushes,
                         "frame_cache_hits", (long long)s.frame_cache_hits,
                         "packet_cache_hits", (long long)s.packet_cache_hits);
}

static PyObject *video_memory(PyObject *obj, PyObject *noargs)
{
    (void)noargs;
    dk_video *v = video_handle(state_of_type(Py_TYPE(obj)), obj);
    if (!v) return NULL;
    dk_video_memory m;
    dk_video_get_memory(v, &m);
    return Py_BuildValue("{s:n,s:n,s:n,s:i}", "index_bytes", (Py_ssize_t)m.index_bytes,
                         "frame_cache_bytes", (Py_ssize_t)m.frame_cache_bytes,
                         "packet_cache_bytes", (Py_ssize_t)m.packet_cache_bytes, "decoders",
                         m.decoders);
}

static PyObject *video_trim(PyObject *obj, PyObject *noargs)
{
    (void)noargs;
    dk_video *v = video_handle(state_of_type(Py_TYPE(obj)), obj);
    if (!v) return NULL;
    dkpy_Video *self = (dkpy_Video *)obj;
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    dk_video_trim(v);
    Py_END_ALLOW_THREADS
    self->busy--;
    Py_RETURN_NONE;
}

static PyObject *video_reset_stats(PyObject *obj, PyObject *noargs)
{
    (void)noargs;
    dk_video *v = video_handle(state_of_type(Py_TYPE(obj)), obj);
    if (!v) return NULL;
    dk_video_reset_stats(v);
    Py_RETURN_NONE;
}

/* get_frames(frames, threads=None, with_status=False, out=None): a new
 * (N, ...) Tensor, or with `out` (a writable C-contiguous buffer of exactly
 * N frames' bytes, e.g. a reused or pinned array) the frames are decoded
 * into it and `out` is returned. */
static PyObject *video_get_frames(PyObject *obj, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"frames", "threads", "with_status", "out", NULL};
    PyObject *frames_obj, *threads = NULL, *out_obj = Py_None;
    int with_status = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OpO:get_frames", kwlist, &frames_obj, &threads,
                                     &with_status, &out_obj))
        return NULL;
    dkpy_Video *self = (dkpy_Video *)obj;
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    dk_video *v = video_handle(st, obj);
    if (!v) return NULL;
    int64_t *frames;
    Py_ssize_t n;
    if (video_ints_arg(frames_obj, "frames", 1, 1, &frames, &n) < 0) return NULL;
    size_t fb = dk_video_frame_bytes(v);
    Py_buffer ob;
    int have_out = out_obj != Py_None;
    if (have_out) {
        if (PyObject_GetBuffer(out_obj, &ob, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
            PyMem_Free(frames);
            return NULL;
        }
        if ((size_t)ob.len != (size_t)n * fb) {
            PyBuffer_Release(&ob);
            PyMem_Free(frames);
            return dkpy_invalid(st, "get_frames(): out holds %zd bytes; %zd frames take %zu",
                                ob.len, n, (size_t)n * fb);
        }
    }
    int *status = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *status);
    dkpy_pool_arg pa;
    if (!status || pool_arg(st, threads, &pa) < 0) {
        if (have_out) PyBuffer_Release(&ob);
        PyMem_Free(frames);
        if (!status) return PyErr_NoMemory();
        PyMem_Free(status);
        return NULL;
    }
    dk_tensor out;
    memset(&out, 0, sizeof out);
    int rc;
    dkpy_msg msg = {{0}};
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    rc = have_out ? dk_video_get_frames_into(v, pa.pool, frames, (int64_t)n, ob.buf, fb, status)
                  : dk_video_get_frames(v, pa.pool, frames, (int64_t)n, &out, status);
    if (rc != DK_OK) msg_grab(&msg);
    pool_arg_done(&pa);
    Py_END_ALLOW_THREADS
    self->busy--;
    PyMem_Free(frames);
    if (have_out) PyBuffer_Release(&ob);
    int whole = rc == DK_EINVAL || rc == DK_ENOMEM || (!have_out && !out.owner);
    if (rc != DK_OK && (!with_status || whole)) {
        dk_tensor_release(&out);
        PyMem_Free(status);
        return dkpy_raise(st, rc, &msg);
    }
    PyObject *t;
    if (have_out) {
        t = Py_NewRef(out_obj);
    } else {
        video_shape_tensor(self, &out, 1);
        t = tensor_wrap(st, &out);
    }
    if (!t || !with_status) {
        PyMem_Free(status);
        return t;
    }
    PyObject *sl = status_list(status, n);
    PyMem_Free(status);
    if (!sl) {
        Py_DECREF(t);
        return NULL;
    }
    return Py_BuildValue("(NN)", t, sl);
}

static PyObject *video_md5(PyObject *obj, PyObject *arg)
{
    dkpy_Video *self = (dkpy_Video *)obj;
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    dk_video *v = video_handle(st, obj);
    if (!v) return NULL;
    long long f = PyLong_AsLongLong(arg);
    if (f == -1 && PyErr_Occurred()) return NULL;
    char hex[33];
    int rc;
    dkpy_msg msg = {{0}};
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    rc = dk_video_frame_md5(v, (int64_t)f, hex);
    if (rc != DK_OK) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    self->busy--;
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    return PyUnicode_FromString(hex);
}

/* video_get_frames_multi(videos, requests, threads=None, with_status=False,
 * stack=-1): the frames of several videos in one call (dk_video_get_frames_multi).
 * stack: 1 one (N, ...) tensor (the videos' frame shapes must agree), 0 a
 * list of per-request tensors, -1 the former when the shapes agree. */
static PyObject *py_video_get_frames_multi(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"videos", "requests", "threads", "with_status", "stack", NULL};
    dkpy_state *st = state_of_module(module);
    PyObject *videos_obj, *reqs_obj, *threads = NULL;
    int with_status = 0, stack = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|Opi:video_get_frames_multi", kwlist,
                                     &videos_obj, &reqs_obj, &threads, &with_status, &stack))
        return NULL;
    PyObject *vseq = PySequence_Fast(videos_obj, "videos must be a sequence of Video objects");
    if (!vseq) return NULL;
    Py_ssize_t nv = PySequence_Fast_GET_SIZE(vseq);
    if (nv < 1 || nv > INT32_MAX) {
        Py_DECREF(vseq);
        return dkpy_invalid(st, "videos must hold 1 to 2^31-1 Video objects, got %zd", nv);
    }
    dkpy_Video **vo = PyMem_Calloc((size_t)nv, sizeof *vo);
    dk_video **vh = PyMem_Calloc((size_t)nv, sizeof *vh);
    int64_t *pairs = NULL;
    dk_video_request *reqs = NULL;
    dk_tensor *outs = NULL;
    int *status = NULL;
    Py_ssize_t n = 0, held = 0;
    PyObject *result = NULL;
    if (!vo || !vh) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t j = 0; j < nv; j++) {
        PyObject *x = PySequence_Fast_GET_ITEM(vseq, j);
        if (!PyObject_TypeCheck(x, st->video_type)) {
            PyErr_Format(PyExc_TypeError, "videos[%zd] must be a drivekit Video, not %.100s", j,
                         Py_TYPE(x)->tp_name);
            goto done;
        }
        if (!(vh[j] = video_handle(st, x))) goto done;
        vo[j] = (dkpy_Video *)Py_NewRef(x);   /* alive while the GIL is released */
        held = j + 1;
    }
    int64_t fs0[3] = {0, 0, 0};
    int nd0 = video_frame_shape(vo[0], fs0), same = 1;
    for (Py_ssize_t j = 1; j < nv && same; j++) {
        int64_t fs[3] = {0, 0, 0};
        int nd = video_frame_shape(vo[j], fs);
        same = nd == nd0 && fs[0] == fs0[0] && fs[1] == fs0[1] && fs[2] == fs0[2];
    }
    if (stack == 1 && !same) {
        dkpy_invalid(st, "video_get_frames_multi(): the videos' frame shapes differ; use stack=False");
        goto done;
    }
    if (stack < 0) stack = same;
    if (video_ints_arg(reqs_obj, "requests", 2, 2, &pairs, &n) < 0) goto done;
    reqs = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *reqs);
    outs = PyMem_Calloc((size_t)(n ? n : 1), sizeof *outs);
    status = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *status);
    if (!reqs || !outs || !status) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (pairs[2 * i] < 0 || pairs[2 * i] >= nv) {
            dkpy_invalid(st, "requests[%zd]: video %lld outside [0, %zd)", i,
                         (long long)pairs[2 * i], nv);
            goto done;
        }
        reqs[i].video = (int32_t)pairs[2 * i];
        reqs[i].frame = pairs[2 * i + 1];
    }
    dkpy_pool_arg pa;
    if (pool_arg(st, threads, &pa) < 0) goto done;
    dk_tensor stacked;
    memset(&stacked, 0, sizeof stacked);
    int rc;
    dkpy_msg msg = {{0}};
    int whole;
    for (Py_ssize_t j = 0; j < nv; j++) vo[j]->busy++;
    Py_BEGIN_ALLOW_THREADS
    rc = dk_video_get_frames_multi(vh, (int)nv, pa.pool, reqs, (int64_t)n, outs, status);
    if (rc != DK_OK) msg_grab(&msg);
    pool_arg_done(&pa);
    whole = rc == DK_EINVAL || rc == DK_ENOMEM;
    for (Py_ssize_t i = 0; i < n && !whole; i++) whole = outs[i].owner == NULL;
    if (!whole && (rc == DK_OK || with_status) && stack) {
        /* One (N, ...) tensor: the frames are copied out of the per-video
         * buffers dk_video_get_frames_multi fills. */
        size_t fb = dk_video_frame_bytes(vh[0]);
        size_t total = (size_t)n * fb;
        dk_buffer *b = NULL;
        int arc = dk_buffer_alloc(total, 0, &b);
        if (arc != DK_OK) {
            rc = arc;
            msg_grab(&msg);
            whole = 1;
        } else {
            uint8_t *dst = dk_buffer_data(b);
            for (Py_ssize_t i = 0; i < n; i++) memcpy(dst + (size_t)i * fb, outs[i].data, fb);
            stacked.data = dst;
            stacked.dtype = DK_U8;
            stacked.owner = b;
            stacked.shape[0] = (int64_t)n;
        }
        for (Py_ssize_t i = 0; i < n; i++) dk_tensor_release(&outs[i]);
    }
    Py_END_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < nv; j++) vo[j]->busy--;
    if (whole || (rc != DK_OK && !with_status)) {
        for (Py_ssize_t i = 0; i < n; i++) dk_tensor_release(&outs[i]);
        dk_tensor_release(&stacked);
        dkpy_raise(st, rc, &msg);
        goto done;
    }
    PyObject *frames;
    if (stack) {
        video_shape_tensor(vo[0], &stacked, 1);
        frames = tensor_wrap(st, &stacked);
    } else {
        frames = PyList_New(n);
        for (Py_ssize_t i = 0; i < n; i++) {
            if (!frames) {
                dk_tensor_release(&outs[i]);
                continue;
            }
            video_shape_tensor(vo[reqs[i].video], &outs[i], 0);
            PyObject *t = tensor_wrap(st, &outs[i]);
            if (!t) Py_CLEAR(frames);
            else PyList_SET_ITEM(frames, i, t);
        }
    }
    if (!frames) goto done;
    if (!with_status) {
        result = frames;
    } else {
        PyObject *sl = status_list(status, n);
        result = sl ? Py_BuildValue("(NN)", frames, sl) : NULL;
        if (!sl) Py_DECREF(frames);
    }
done:
    for (Py_ssize_t j = 0; j < held; j++) Py_DECREF(vo[j]);
    Py_DECREF(vseq);
    PyMem_Free(vo);
    PyMem_Free(vh);
    PyMem_Free(pairs);
    PyMem_Free(reqs);
    PyMem_Free(outs);
    PyMem_Free(status);
    return result;
}

static PyGetSetDef video_getset[] = {
    {"path", video_get_path, NULL, "The video's path (str).", NULL},
    {"closed", video_get_closed, NULL, "True after close().", NULL},
    {"frame_shape", video_get_frame_shape, NULL,
     "Shape of one output frame: (H, W, 3) rgb, (H*3/2, W) nv12 of even size, (bytes,) "
     "otherwise.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef video_methods[] = {
    {"info", video_info, METH_NOARGS, "info() -> dict (dk_video_info plus the output description)"},
    {"frame_time", video_frame_time, METH_O, "frame_time(frame) -> (pts, seconds)"},
    {"frame_cost", video_frame_cost, METH_O,
     "frame_cost(frame) -> (keyframe, min_decodes) (dk_video_frame_cost)"},
    {"keyframes", video_keyframes, METH_NOARGS, "keyframes() -> list of frame ids"},
    {"stats", video_stats, METH_NOARGS, "stats() -> dict (dk_video_stats)"},
    {"reset_stats", video_reset_stats, METH_NOARGS, "reset_stats() -> None"},
    {"memory", video_memory, METH_NOARGS, "memory() -> dict (dk_video_memory)"},
    {"trim", video_trim, METH_NOARGS, "trim() -> None (dk_video_trim)"},
    {"get_frames", DKPY_KW(video_get_frames),
     "get_frames(frames, threads=None, with_status=False, out=None) -> Tensor or out\n\n"
     "With with_status, (frames, list of int status)."},
    {"md5", video_md5, METH_O, "md5(frame) -> str (ffmpeg framemd5 of the native picture)"},
    {"close", video_close, METH_NOARGS, "close() -> None"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot video_slots[] = {
    {Py_tp_doc, (void *)"Video(path, *, output='rgb', width=0, height=0, frame_cache_bytes=-1,\n"
                        "      packet_cache_bytes=-1, max_decoders=0, decoder_threads=1, index=None)\n\n"
                        "An open video (dk_video). Use drivekit.video.Decoder instead."},
    {Py_tp_new, (void *)video_new},
    {Py_tp_dealloc, (void *)video_dealloc},
    {Py_tp_getset, video_getset},
    {Py_tp_methods, video_methods},
    {Py_sq_length, (void *)video_len},
    {0, NULL},
};

static PyType_Spec video_spec = {
    .name = "drivekit._drivekit.Video",
    .basicsize = sizeof(dkpy_Video),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = video_slots,
};

/* ------------------------------------------------------------------------ */
/* Gaussian scenes (drivekit.sim)                                            */
/*
 * _drivekit.Scene owns a dk_scene. Nothing modifies a scene after it is made
 * (the arrays are exported as copies), so renders may run concurrently with
 * the GIL released: the calling method holds a reference on the object for
 * the duration of the call. Array arguments are C-contiguous float32 buffers
 * of exact shapes; converting array-likes is sim.py's job.
 */

typedef struct {
    PyObject_HEAD
    dk_scene *s;
    /* Only the actor tracks of a scene change (set_actor_track, load_tracks).
       Guarded by the GIL: `readers` counts calls reading the scene with the
       GIL released, `writing` is set while tracks change; a change while
       someone reads (or a read while tracks change) raises instead of racing. */
    Py_ssize_t readers;
    int writing;
} dkpy_Scene;

static PyObject *scene_wrap(dkpy_state *st, dk_scene *s)
{
    dkpy_Scene *self = PyObject_New(dkpy_Scene, st->scene_type);
    if (!self) {
        dk_scene_destroy(s);
        return NULL;
    }
    self->s = s;
    self->readers = 0;
    self->writing = 0;
    return (PyObject *)self;
}

/* Raises drivekit.Error (DK_ESTATE) for a read during a track change or a
 * change during reads; else registers the caller. Call with the GIL held. */
static int scene_begin(dkpy_state *st, PyObject *obj, int write)
{
    dkpy_Scene *self = (dkpy_Scene *)obj;
    if (self->writing || (write && self->readers > 0)) {
        dkpy_msg m;
        snprintf(m.text, sizeof m.text, "Scene: %s",
                 self->writing ? "its actor tracks are being changed by another thread"
                               : "cannot change actor tracks while another thread renders it");
        dkpy_raise(st, DK_ESTATE, &m);
        return -1;
    }
    if (write) self->writing = 1;
    else self->readers++;
    return 0;
}

static void scene_end(PyObject *obj, int write)
{
    dkpy_Scene *self = (dkpy_Scene *)obj;
    if (write) self->writing = 0;
    else self->readers--;
}

static void scene_dealloc(PyObject *obj)
{
    dkpy_Scene *self = (dkpy_Scene *)obj;
    PyTypeObject *tp = Py_TYPE(obj);
    dk_scene *s = self->s;
    self->s = NULL;
    if (s) {
        Py_BEGIN_ALLOW_THREADS
        dk_scene_destroy(s);
        Py_END_ALLOW_THREADS
    }
    tp->tp_free(obj);
    Py_DECREF(tp);
}

static Py_ssize_t scene_len(PyObject *obj)
{
    return (Py_ssize_t)((dkpy_Scene *)obj)->s->n;
}

static PyObject *scene_get_sh_degree(PyObject *obj, void *closure)
{
    (void)closure;
    return PyLong_FromLong(((dkpy_Scene *)obj)->s->sh_degree);
}

static PyObject *scene_repr(PyObject *obj)
{
    const dk_scene *s = ((dkpy_Scene *)obj)->s;
    return PyUnicode_FromFormat("drivekit.sim.Scene(%lld gaussians, sh_degree=%d)",
                                (long long)s->n, s->sh_degree);
}

static PyObject *py_scene_load_ply(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "allow_invalid", NULL};
    dkpy_state *st = state_of_module(module);
    PyObject *path = NULL;
    int allow_invalid = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|p:scene_load_ply", kwlist,
                                     PyUnicode_FSConverter, &path, &allow_invalid))
        return NULL;
    const char *cpath = PyBytes_AS_STRING(path);
    dk_scene *s = NULL;
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_scene_load_ply(cpath, allow_invalid ? DK_PLY_ALLOW_INVALID : 0u, &s);
    if (rc != DK_OK) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    return scene_wrap(st, s);
}

/* A C-contiguous float32 buffer of exactly `count` elements. */
static int f32_arg(dkpy_state *st, PyObject *obj, const char *what, Py_ssize_t count,
                   Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_BufferError) && !PyErr_ExceptionMatches(PyExc_TypeError))
            return -1;
        PyErr_Clear();
        dkpy_invalid(st, "%s must be a C-contiguous float32 array (use drivekit.sim, which "
                         "converts)", what);
        return -1;
    }
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=' || *f == '<') f++;
    if (strcmp(f, "f") != 0 || view->itemsize != 4 || view->len != count * 4) {
        PyBuffer_Release(view);
        dkpy_invalid(st, "%s must be a C-contiguous float32 array of %zd elements", what, count);
        return -1;
    }
    return 0;
}

static PyObject *py_scene_from_arrays(PyObject *module, PyObject *args)
{
    dkpy_state *st = state_of_module(module);
    long long n;
    int degree;
    PyObject *objs[5];
    if (!PyArg_ParseTuple(args, "LiOOOOO:scene_from_arrays", &n, &degree, &objs[0], &objs[1],
                          &objs[2], &objs[3], &objs[4]))
        return NULL;
    if (n < 0 || n > DK_SCENE_MAX_GAUSSIANS || degree < 0 || degree > DK_SCENE_MAX_SH_DEGREE)
        return dkpy_invalid(st, "scene_from_arrays(): n = %lld or sh_degree = %d out of range", n,
                            degree);
    Py_ssize_t k = (Py_ssize_t)(degree + 1) * (degree + 1);
    static const char *const names[5] = {"means", "scales_log", "rotations_wxyz",
                                         "opacity_logit", "sh"};
    const Py_ssize_t per[5] = {3, 3, 4, 1, 3 * k};
    Py_buffer views[5];
    int got = 0;
    for (; got < 5; got++)
        if (f32_arg(st, objs[got], names[got], (Py_ssize_t)n * per[got], &views[got]) < 0) break;
    if (got < 5) {
        for (int i = 0; i < got; i++) PyBuffer_Release(&views[i]);
        return NULL;
    }
    dk_scene *s = NULL;
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_scene_create((int64_t)n, degree, 0, &s);
    if (rc == DK_OK) {
        float *dst[5] = {s->means, s->scales, s->rotations, s->opacities, s->sh};
        for (int i = 0; i < 5; i++)
            if (views[i].len) memcpy(dst[i], views[i].buf, (size_t)views[i].len);
    } else {
        msg_grab(&msg);
    }
    Py_END_ALLOW_THREADS
    for (int i = 0; i < 5; i++) PyBuffer_Release(&views[i]);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    return scene_wrap(st, s);
}

static PyObject *scene_save_ply(PyObject *obj, PyObject *arg)
{
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(arg, &path)) return NULL;
    const char *cpath = PyBytes_AS_STRING(path);
    const dk_scene *s = ((dkpy_Scene *)obj)->s;
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_scene_save_ply(s, cpath);
    if (rc != DK_OK) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    Py_RETURN_NONE;
}

/* Copies of the stored (pre-activation) arrays as a dict of Tensors. */
static PyObject *scene_arrays(PyObject *obj, PyObject *noargs)
{
    (void)noargs;
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    const dk_scene *s = ((dkpy_Scene *)obj)->s;
    static const char *const names[5] = {"means", "scales_log", "rotations_wxyz",
                                         "opacity_logit", "sh"};
    const float *src[5] = {s->means, s->scales, s->rotations, s->opacities, s->sh};
    int64_t shapes[5][3] = {{s->n, 3, 0}, {s->n, 3, 0}, {s->n, 4, 0}, {s->n, 0, 0},
                            {s->n, 3, s->sh_coeffs}};
    const int ndims[5] = {2, 2, 2, 1, 3};
    dk_tensor t[5];
    memset(t, 0, sizeof t);
    int rc = DK_OK;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < 5 && rc == DK_OK; i++) {
        rc = dk_tensor_alloc(&t[i], DK_F32, ndims[i], shapes[i]);
        if (rc == DK_OK && dk_tensor_nbytes(&t[i])) memcpy(t[i].data, src[i], dk_tensor_nbytes(&t[i]));
    }
    if (rc != DK_OK) {
        msg_grab(&msg);
        for (int i = 0; i < 5; i++) dk_tensor_release(&t[i]);
    }
    Py_END_ALLOW_THREADS
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    PyObject *d = PyDict_New();
    int ok = d != NULL;
    for (int i = 0; i < 5; i++) {
        PyObject *v = ok ? tensor_wrap(st, &t[i]) : NULL;
        if (!v) {
            dk_tensor_release(&t[i]);
            ok = 0;
            continue;
        }
        if (PyDict_SetItemString(d, names[i], v) < 0) ok = 0;
        Py_DECREF(v);
    }
    if (!ok) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

/* A rigid 4x4 pose from a C-contiguous float64 buffer of 16 values. */
static int pose_arg(dkpy_state *st, PyObject *obj, const char *what, dk_pose *out)
{
    Py_buffer v;
    if (PyObject_GetBuffer(obj, &v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_BufferError) && !PyErr_ExceptionMatches(PyExc_TypeError))
            return -1;
        PyErr_Clear();
        dkpy_invalid(st, "%s must be a C-contiguous float64 4x4 array", what);
        return -1;
    }
    const char *f = v.format ? v.format : "B";
    if (*f == '@' || *f == '=' || *f == '<') f++;
    if (strcmp(f, "d") != 0 || v.itemsize != 8 || v.len != 16 * 8) {
        PyBuffer_Release(&v);
        dkpy_invalid(st, "%s must be a C-contiguous float64 4x4 array", what);
        return -1;
    }
    double m[16];
    memcpy(m, v.buf, sizeof m);
    PyBuffer_Release(&v);
    int rc = dk_pose_from_matrix(m, out);
    if (rc != DK_OK) {
        dkpy_raise(st, rc, NULL);   /* nothing else ran on this thread since */
        return -1;
    }
    return 0;
}

static PyObject *scene_render(PyObject *obj, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"camera", "cam_to_world", "background", "threads", "rolling_shutter",
                             "cam_to_world_end", "want_depth", "time", NULL};
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    PyObject *camobj, *pose_obj, *threads = NULL, *end_obj = Py_None;
    float bg[3] = {0, 0, 0};
    int rolling = 0, want_depth = 1;
    double time_s = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|$(fff)OpOpd:render", kwlist, &camobj,
                                     &pose_obj, &bg[0], &bg[1], &bg[2], &threads, &rolling,
                                     &end_obj, &want_depth, &time_s))
        return NULL;
    if (!PyObject_TypeCheck(camobj, st->camera_type)) {
        PyErr_Format(PyExc_TypeError, "render(): camera must be a drivekit.camera.Camera, not %.100s",
                     Py_TYPE(camobj)->tp_name);
        return NULL;
    }
    dk_render_config cfg;
    dk_render_config_init(&cfg);
    memcpy(cfg.background, bg, sizeof bg);
    cfg.time = time_s;
    dk_pose pose;
    if (pose_arg(st, pose_obj, "cam_to_world", &pose) < 0) return NULL;
    if (rolling) {
        cfg.rolling_shutter = 1;
        if (end_obj == Py_None)
            return dkpy_invalid(st, "render(): rolling_shutter needs cam_to_world_end");
        if (pose_arg(st, end_obj, "cam_to_world_end", &cfg.cam_to_world_end) < 0) return NULL;
    } else if (end_obj != Py_None) {
        return dkpy_invalid(st, "render(): cam_to_world_end is only used with rolling_shutter=True");
    }
    dk_camera cam = ((dkpy_Camera *)camobj)->cam;
    dkpy_pool_arg pa;
    if (pool_arg(st, threads, &pa) < 0) return NULL;
    if (scene_begin(st, obj, 0) < 0) {
        pool_arg_done(&pa);
        return NULL;
    }
    const dk_scene *s = ((dkpy_Scene *)obj)->s;
    int64_t shape3[3] = {cam.height, cam.width, 3};
    dk_tensor rgb, alpha, depth;
    memset(&rgb, 0, sizeof rgb);
    memset(&alpha, 0, sizeof alpha);
    memset(&depth, 0, sizeof depth);
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_tensor_alloc(&rgb, DK_F32, 3, shape3);
    if (rc == DK_OK) rc = dk_tensor_alloc(&alpha, DK_F32, 2, shape3);
    if (rc == DK_OK && want_depth) rc = dk_tensor_alloc(&depth, DK_F32, 2, shape3);
    if (rc == DK_OK)
        rc = dk_render_camera(s, &cam, &pose, &cfg, pa.pool, (float *)rgb.data,
                              (float *)alpha.data, want_depth ? (float *)depth.data : NULL);
    if (rc != DK_OK) {
        msg_grab(&msg);
        dk_tensor_release(&rgb);
        dk_tensor_release(&alpha);
        dk_tensor_release(&depth);
    }
    pool_arg_done(&pa);
    Py_END_ALLOW_THREADS
    scene_end(obj, 0);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    PyObject *r = tensor_wrap(st, &rgb);
    PyObject *a = tensor_wrap(st, &alpha);
    PyObject *d = want_depth ? tensor_wrap(st, &depth) : Py_NewRef(Py_None);
    if (!r || !a || !d) {
        Py_XDECREF(r);
        Py_XDECREF(a);
        Py_XDECREF(d);
        return NULL;
    }
    return Py_BuildValue("(NNN)", r, a, d);
}

/* A C-contiguous float64 buffer of exactly `count` elements. */
static int f64_arg(dkpy_state *st, PyObject *obj, const char *what, Py_ssize_t count,
                   Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_BufferError) && !PyErr_ExceptionMatches(PyExc_TypeError))
            return -1;
        PyErr_Clear();
        dkpy_invalid(st, "%s must be a C-contiguous float64 array", what);
        return -1;
    }
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=' || *f == '<') f++;
    if (strcmp(f, "d") != 0 || view->itemsize != 8 || view->len != count * 8) {
        PyBuffer_Release(view);
        dkpy_invalid(st, "%s must be a C-contiguous float64 array of %zd elements", what, count);
        return -1;
    }
    return 0;
}

/* set_actor_track(actor_id, n, times (n,) float64, poses (n, 4, 4) float64) */
static PyObject *scene_set_actor_track(PyObject *obj, PyObject *args)
{
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    long long id;
    Py_ssize_t n;
    PyObject *tobj, *pobj;
    if (!PyArg_ParseTuple(args, "LnOO:set_actor_track", &id, &n, &tobj, &pobj)) return NULL;
    if (id < 0 || id > INT32_MAX)
        return dkpy_invalid(st, "set_actor_track(): actor_id %lld outside [0, 2^31-1]", id);
    if (n < 1 || n > INT32_MAX / 16)
        return dkpy_invalid(st, "set_actor_track(): %zd keyframes (at least 1)", n);
    Py_buffer tv, pv;
    if (f64_arg(st, tobj, "times", n, &tv) < 0) return NULL;
    if (f64_arg(st, pobj, "poses", n * 16, &pv) < 0) {
        PyBuffer_Release(&tv);
        return NULL;
    }
    dk_pose *poses = PyMem_Malloc((size_t)n * sizeof *poses);
    int rc = poses ? DK_OK : DK_ENOMEM;
    dkpy_msg msg = {{0}};
    if (!poses) snprintf(msg.text, sizeof msg.text, "set_actor_track(): out of memory");
    for (Py_ssize_t k = 0; k < n && rc == DK_OK; k++) {
        rc = dk_pose_from_matrix((const double *)pv.buf + 16 * k, &poses[k]);
        if (rc != DK_OK)
            snprintf(msg.text, sizeof msg.text, "set_actor_track(): actor %lld: keyframe %zd: %s",
                     id, k, dk_errmsg());
    }
    if (rc == DK_OK && scene_begin(st, obj, 1) < 0) {
        PyBuffer_Release(&tv);
        PyBuffer_Release(&pv);
        PyMem_Free(poses);
        return NULL;
    }
    if (rc == DK_OK) {
        /* quick and memory-only: done with the GIL held, no reader can start */
        rc = dk_scene_set_actor_track(((dkpy_Scene *)obj)->s, (int32_t)id, (int)n,
                                      (const double *)tv.buf, poses);
        if (rc != DK_OK) msg_grab(&msg);
        scene_end(obj, 1);
    }
    PyBuffer_Release(&tv);
    PyBuffer_Release(&pv);
    PyMem_Free(poses);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    Py_RETURN_NONE;
}

/* actor_pose(actor_id, t) -> tuple of 16 floats (row-major 4x4) */
static PyObject *scene_actor_pose(PyObject *obj, PyObject *args)
{
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    long long id;
    double t;
    if (!PyArg_ParseTuple(args, "Ld:actor_pose", &id, &t)) return NULL;
    if (id < INT32_MIN || id > INT32_MAX)
        return dkpy_invalid(st, "actor_pose(): actor_id %lld out of range", id);
    if (scene_begin(st, obj, 0) < 0) return NULL;
    dk_pose p;
    int rc = dk_scene_actor_pose(((dkpy_Scene *)obj)->s, (int32_t)id, t, &p);
    scene_end(obj, 0);
    if (rc != DK_OK) return dkpy_raise(st, rc, NULL);
    double m[16];
    dk_pose_to_matrix(&p, m);
    PyObject *tup = PyTuple_New(16);
    for (int i = 0; tup && i < 16; i++) {
        PyObject *v = PyFloat_FromDouble(m[i]);
        if (!v) {
            Py_CLEAR(tup);
            break;
        }
        PyTuple_SET_ITEM(tup, i, v);
    }
    return tup;
}

static PyObject *scene_actor_ids(PyObject *obj, PyObject *noargs)
{
    (void)noargs;
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    if (scene_begin(st, obj, 0) < 0) return NULL;
    const dk_scene *s = ((dkpy_Scene *)obj)->s;
    int n = dk_scene_actor_track_count(s);
    int32_t *ids = PyMem_Malloc((size_t)(n > 0 ? n : 1) * sizeof *ids);
    PyObject *list = NULL;
    if (!ids) {
        PyErr_NoMemory();
    } else {
        n = dk_scene_actor_track_ids(s, ids, n);
        list = PyList_New(n);
        for (int i = 0; list && i < n; i++) {
            PyObject *v = PyLong_FromLong(ids[i]);
            if (!v) Py_CLEAR(list);
            else PyList_SET_ITEM(list, i, v);
        }
    }
    scene_end(obj, 0);
    PyMem_Free(ids);
    return list;
}

static PyObject *scene_tracks_io(PyObject *obj, PyObject *arg, int load)
{
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(arg, &path)) return NULL;
    if (scene_begin(st, obj, load) < 0) {
        Py_DECREF(path);
        return NULL;
    }
    const char *cpath = PyBytes_AS_STRING(path);
    dk_scene *s = ((dkpy_Scene *)obj)->s;
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = load ? dk_scene_load_tracks_json(s, cpath) : dk_scene_save_tracks_json(s, cpath);
    if (rc != DK_OK) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    scene_end(obj, load);
    Py_DECREF(path);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    Py_RETURN_NONE;
}

static PyObject *scene_save_tracks(PyObject *obj, PyObject *arg)
{
    return scene_tracks_io(obj, arg, 0);
}

static PyObject *scene_load_tracks(PyObject *obj, PyObject *arg)
{
    return scene_tracks_io(obj, arg, 1);
}

static PyObject *py_scene_from_scenario(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"scenario", "seed", "duration", "density", "object_density",
                             "margin", "sh_degree", "include", "jitter_seed", NULL};
    dkpy_state *st = state_of_module(module);
    PyObject *path = NULL, *scen = Py_None;
    unsigned long long seed = 1, jitter = 0;
    double duration = 20;
    unsigned int include = DK_FROM_WORLD_ALL;
    dk_scene_from_world_config cfg;
    dk_scene_from_world_config_init(&cfg);
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$KddddiIK:scene_from_scenario", kwlist,
                                     &scen, &seed, &duration, &cfg.density, &cfg.object_density,
                                     &cfg.margin, &cfg.sh_degree, &include, &jitter))
        return NULL;
    if (scen != Py_None && !PyUnicode_FSConverter(scen, &path)) return NULL;
    cfg.include = include;
    cfg.seed = jitter;
    const char *cpath = path ? PyBytes_AS_STRING(path) : NULL;
    dk_scenario *sc = NULL;
    dk_scene *s = NULL;
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    if (cpath) {
        rc = dk_scenario_load(cpath, &sc);
    } else {
        dk_world_gen_config g;
        dk_world_gen_config_init(&g);
        g.seed = seed;
        g.duration = duration;
        rc = dk_world_generate(&g, &sc);
    }
    if (rc == DK_OK) rc = dk_scene_from_scenario(sc, &cfg, &s);
    if (rc != DK_OK) msg_grab(&msg);
    dk_scenario_destroy(sc);
    Py_END_ALLOW_THREADS
    Py_XDECREF(path);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    return scene_wrap(st, s);
}

/* One lidar sweep (dk_render_lidar) and its points (dk_lidar_points). */
static PyObject *scene_render_lidar(PyObject *obj, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"lidar", "lidar_to_world", "time", "lidar_to_world_end", "threads",
                             "hit_threshold", "raydrop_mode", "raydrop_threshold", "seed",
                             "default_intensity", "default_raydrop", NULL};
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    PyObject *lidar_obj, *pose_obj, *end_obj = Py_None, *threads = NULL;
    dk_lidar_render_config cfg;
    dk_lidar_render_config_init(&cfg);
    int mode = (int)cfg.raydrop_mode;
    unsigned long long seed = 0;
    float def_i = cfg.default_intensity, def_d = cfg.default_raydrop;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|$dOOdidKff:render_lidar", kwlist,
                                     &lidar_obj, &pose_obj, &cfg.time, &end_obj, &threads,
                                     &cfg.hit_threshold, &mode, &cfg.raydrop_threshold, &seed,
                                     &def_i, &def_d))
        return NULL;
    cfg.raydrop_mode = (dk_lidar_raydrop_mode)mode;
    cfg.raydrop_seed = (uint64_t)seed;
    cfg.default_intensity = def_i;
    cfg.default_raydrop = def_d;
    dk_lidar_model m;
    if (lidar_arg(st, lidar_obj, &m) < 0) return NULL;
    dk_pose pose;
    if (pose_arg(st, pose_obj, "lidar_to_world", &pose) < 0) return NULL;
    if (end_obj != Py_None) {
        cfg.sensor_motion = 1;
        if (pose_arg(st, end_obj, "lidar_to_world_end", &cfg.lidar_to_world_end) < 0) return NULL;
    }
    dkpy_pool_arg pa;
    if (pool_arg(st, threads, &pa) < 0) return NULL;
    const dk_scene *s = ((dkpy_Scene *)obj)->s;
    int64_t shape[2] = {m.n_beams, m.n_columns};
    int64_t pshape[2] = {(int64_t)m.n_beams * m.n_columns, 6};
    dk_tensor t[5];
    memset(t, 0, sizeof t);
    int rc = DK_OK;
    int64_t np = 0;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < 4 && rc == DK_OK; i++) rc = dk_tensor_alloc(&t[i], DK_F32, 2, shape);
    if (rc == DK_OK) rc = dk_tensor_alloc(&t[4], DK_F32, 2, pshape);
    if (rc == DK_OK)
        rc = dk_render_lidar(s, &m, &pose, &cfg, pa.pool, (float *)t[0].data, (float *)t[1].data,
                             (float *)t[2].data, (float *)t[3].data);
    if (rc == DK_OK)
        rc = dk_lidar_points(&m, &pose, &cfg, (const float *)t[0].data, (const float *)t[1].data,
                             (const float *)t[2].data, (float *)t[4].data, pshape[0], &np);
    if (rc == DK_OK) {
        t[4].shape[0] = np;   /* a view of the first np rows */
    } else {
        msg_grab(&msg);
        for (int i = 0; i < 5; i++) dk_tensor_release(&t[i]);
    }
    pool_arg_done(&pa);
    Py_END_ALLOW_THREADS
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    PyObject *o[5];
    int ok = 1;
    for (int i = 0; i < 5; i++) {
        o[i] = ok ? tensor_wrap(st, &t[i]) : NULL;
        if (!o[i]) {
            dk_tensor_release(&t[i]);
            ok = 0;
        }
    }
    if (!ok) {
        for (int i = 0; i < 5; i++) Py_XDECREF(o[i]);
        return NULL;
    }
    return Py_BuildValue("(NNNNN)", o[0], o[1], o[2], o[3], o[4]);
}

static PyGetSetDef scene_getset[] = {
    {"sh_degree", scene_get_sh_degree, NULL, "SH degree of the stored colours (0..3).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef scene_methods[] = {
    {"save_ply", scene_save_ply, METH_O, "save_ply(path) -> None (dk_scene_save_ply)"},
    {"set_actor_track", scene_set_actor_track, METH_VARARGS,
     "set_actor_track(actor_id, n, times, poses) -> None (dk_scene_set_actor_track);\n"
     "times: C-contiguous float64 (n,), poses: float64 (n, 4, 4) actor_to_world"},
    {"actor_pose", scene_actor_pose, METH_VARARGS,
     "actor_pose(actor_id, t) -> tuple of 16 floats (row-major 4x4; dk_scene_actor_pose)"},
    {"actor_ids", scene_actor_ids, METH_NOARGS, "actor_ids() -> list of tracked actor ids"},
    {"save_tracks", scene_save_tracks, METH_O,
     "save_tracks(path) -> None (dk_scene_save_tracks_json)"},
    {"load_tracks", scene_load_tracks, METH_O,
     "load_tracks(path) -> None (dk_scene_load_tracks_json: replaces every track)"},
    {"arrays", scene_arrays, METH_NOARGS,
     "arrays() -> dict of Tensors (copies of the stored, pre-activation values)"},
    {"render", DKPY_KW(scene_render),
     "render(camera, cam_to_world, *, background=(0, 0, 0), threads=None,\n"
     "       rolling_shutter=False, cam_to_world_end=None, want_depth=True, time=0.0)\n"
     "-> (rgb Tensor (H, W, 3), alpha Tensor (H, W), depth Tensor (H, W) or None)\n\n"
     "cam_to_world(_end): C-contiguous float64 4x4 (dk_pose_from_matrix)."},
    {"render_lidar", DKPY_KW(scene_render_lidar),
     "render_lidar(lidar, lidar_to_world, *, time=0.0, lidar_to_world_end=None, threads=None,\n"
     "             hit_threshold=0.5, raydrop_mode=1, raydrop_threshold=0.5, seed=0,\n"
     "             default_intensity=0.5, default_raydrop=0.0)\n"
     "-> (range, intensity, raydrop, alpha Tensors (n_beams, n_columns), points (N, 6))\n\n"
     "lidar: preset number or lidar_preset() dict; poses: C-contiguous float64 4x4."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot scene_slots[] = {
    {Py_tp_doc, (void *)"A Gaussian-splat scene (dk_scene). Made by scene_load_ply or\n"
                        "scene_from_arrays; immutable. Use drivekit.sim.Scene."},
    {Py_tp_dealloc, (void *)scene_dealloc},
    {Py_tp_repr, (void *)scene_repr},
    {Py_tp_getset, scene_getset},
    {Py_tp_methods, scene_methods},
    {Py_sq_length, (void *)scene_len},
    {0, NULL},
};

static PyType_Spec scene_spec = {
    .name = "drivekit._drivekit.Scene",
    .basicsize = sizeof(dkpy_Scene),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = scene_slots,
};

/* ------------------------------------------------------------------------ */
/* Closed-loop simulator (drivekit.sim.Simulator)                            */
/*
 * _drivekit.Sim owns a dk_sim and a reference to the Scene it renders, which
 * the dk_sim borrows (scenes are immutable, so that is all it needs). Every
 * call releases the GIL; the dk_sim serialises calls on itself.
 */

typedef struct {
    PyObject_HEAD
    dk_sim *sim;
    PyObject *scene;   /* the _drivekit.Scene the dk_sim borrows */
} dkpy_Sim;

static PyObject *py_sim_create(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"scene", "width", "height", "threads", "rolling_shutter",
                             "background", "tracks", NULL};
    dkpy_state *st = state_of_module(module);
    PyObject *scene, *tracks_obj = Py_None, *tracks = NULL;
    int width = 1600, height = 900, threads = 1, rolling = 1;
    float bg[3] = {0, 0, 0};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|iiip(fff)O:sim_create", kwlist, &scene,
                                     &width, &height, &threads, &rolling, &bg[0], &bg[1], &bg[2],
                                     &tracks_obj))
        return NULL;
    if (tracks_obj != Py_None && !PyUnicode_FSConverter(tracks_obj, &tracks)) return NULL;
    const char *tracks_path = tracks ? PyBytes_AS_STRING(tracks) : NULL;
    if (!PyObject_TypeCheck(scene, st->scene_type)) {
        PyErr_Format(PyExc_TypeError, "sim_create(): scene must be a drivekit Scene, not %.100s",
                     Py_TYPE(scene)->tp_name);
        Py_XDECREF(tracks);
        return NULL;
    }
    if (width < 1 || width > 65536 || height < 1 || height > 65536)
    {
        Py_XDECREF(tracks);
        return dkpy_invalid(st, "sim_create(): camera size %dx%d outside [1, 65536]", width,
                            height);
    }
    dk_rig *rig = PyMem_Malloc(sizeof *rig);
    if (!rig) {
        Py_XDECREF(tracks);
        return PyErr_NoMemory();
    }
    /* dk_sim_create copies the scene's actor tracks without the GIL: no track
       change may run meanwhile (renders use the sim's own copy after that). */
    if (scene_begin(st, scene, 0) < 0) {
        PyMem_Free(rig);
        Py_XDECREF(tracks);
        return NULL;
    }
    dk_sim_config sc;
    dk_sim_config_init(&sc);
    sc.n_threads = threads;
    sc.rolling_shutter = rolling;
    memcpy(sc.render.background, bg, sizeof bg);
    const dk_scene *s = ((dkpy_Scene *)scene)->s;
    dk_sim *sim = NULL;
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    dk_rig_nuscenes(rig, width, height);
    rc = dk_sim_create(s, rig, &sc, &sim);
    if (rc == DK_OK && tracks_path) {
        rc = dk_sim_load_tracks_json(sim, tracks_path);
        if (rc != DK_OK) {
            msg_grab(&msg);
            dk_sim_destroy(sim);
            sim = NULL;
        }
    } else if (rc != DK_OK) {
        msg_grab(&msg);
    }
    Py_END_ALLOW_THREADS
    scene_end(scene, 0);
    PyMem_Free(rig);
    Py_XDECREF(tracks);
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    dkpy_Sim *self = PyObject_New(dkpy_Sim, st->sim_type);
    if (!self) {
        dk_sim_destroy(sim);
        return NULL;
    }
    self->sim = sim;
    self->scene = Py_NewRef(scene);
    return (PyObject *)self;
}

static void sim_dealloc(PyObject *obj)
{
    dkpy_Sim *self = (dkpy_Sim *)obj;
    PyTypeObject *tp = Py_TYPE(obj);
    dk_sim *sim = self->sim;
    self->sim = NULL;
    if (sim) {
        Py_BEGIN_ALLOW_THREADS
        dk_sim_destroy(sim);
        Py_END_ALLOW_THREADS
    }
    Py_CLEAR(self->scene);   /* after the dk_sim that borrows it */
    tp->tp_free(obj);
    Py_DECREF(tp);
}

static PyObject *sim_sensors(PyObject *obj, PyObject *noargs)
{
    (void)noargs;
    const dk_rig *rig = dk_sim_rig(((dkpy_Sim *)obj)->sim);
    PyObject *list = PyList_New(rig->n_sensors);
    for (int i = 0; list && i < rig->n_sensors; i++) {
        PyObject *d = rig_sensor_dict(&rig->sensors[i]);
        if (!d) Py_CLEAR(list);
        else PyList_SET_ITEM(list, i, d);
    }
    return list;
}

static PyObject *sim_find_sensor(PyObject *obj, PyObject *arg)
{
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    dk_sim *sim = ((dkpy_Sim *)obj)->sim;
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_sim_find_sensor(sim, name);
    if (rc < 0) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    if (rc < 0) return dkpy_raise(st, rc, &msg);
    return PyLong_FromLong(rc);
}

static PyObject *sim_render_camera(PyObject *obj, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sensor", "ego_to_world", "timestamp", "ego_to_world_end",
                             "want_depth", NULL};
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    int sensor, want_depth = 1;
    PyObject *pose_obj, *end_obj = Py_None;
    double t;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOd|Op:render_camera", kwlist, &sensor,
                                     &pose_obj, &t, &end_obj, &want_depth))
        return NULL;
    dk_pose ego, end;
    if (pose_arg(st, pose_obj, "ego_to_world", &ego) < 0) return NULL;
    if (end_obj != Py_None && pose_arg(st, end_obj, "ego_to_world_end", &end) < 0) return NULL;
    dk_sim *sim = ((dkpy_Sim *)obj)->sim;
    const dk_rig *rig = dk_sim_rig(sim);
    if (sensor < 0 || sensor >= rig->n_sensors ||
        rig->sensors[sensor].kind != DK_SENSOR_CAMERA) {
        int rc = sensor < 0 || sensor >= rig->n_sensors ? DK_ERANGE : DK_EINVAL;
        dkpy_msg msg = {{0}};
        Py_BEGIN_ALLOW_THREADS
        dk_sim_render_camera(sim, sensor, &ego, t, NULL, NULL, NULL, NULL);
        msg_grab(&msg);
        Py_END_ALLOW_THREADS
        return dkpy_raise(st, rc, &msg);
    }
    const dk_camera *cam = &rig->sensors[sensor].camera;
    int64_t shape3[3] = {cam->height, cam->width, 3};
    dk_tensor rgb, alpha, depth;
    memset(&rgb, 0, sizeof rgb);
    memset(&alpha, 0, sizeof alpha);
    memset(&depth, 0, sizeof depth);
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_tensor_alloc(&rgb, DK_F32, 3, shape3);
    if (rc == DK_OK) rc = dk_tensor_alloc(&alpha, DK_F32, 2, shape3);
    if (rc == DK_OK && want_depth) rc = dk_tensor_alloc(&depth, DK_F32, 2, shape3);
    if (rc == DK_OK)
        rc = dk_sim_render_camera(sim, sensor, &ego, t, end_obj != Py_None ? &end : NULL,
                                  (float *)rgb.data, (float *)alpha.data,
                                  want_depth ? (float *)depth.data : NULL);
    if (rc != DK_OK) {
        msg_grab(&msg);
        dk_tensor_release(&rgb);
        dk_tensor_release(&alpha);
        dk_tensor_release(&depth);
    }
    Py_END_ALLOW_THREADS
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    PyObject *r = tensor_wrap(st, &rgb);
    PyObject *a = tensor_wrap(st, &alpha);
    PyObject *d = want_depth ? tensor_wrap(st, &depth) : Py_NewRef(Py_None);
    if (!r || !a || !d) {
        Py_XDECREF(r);
        Py_XDECREF(a);
        Py_XDECREF(d);
        return NULL;
    }
    return Py_BuildValue("(NNN)", r, a, d);
}

static PyObject *sim_render_lidar(PyObject *obj, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sensor", "ego_to_world", "timestamp", "ego_to_world_end", "points",
                             NULL};
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    int sensor, want_points = 0;
    PyObject *pose_obj, *end_obj = Py_None;
    double t;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOd|Op:render_lidar", kwlist, &sensor,
                                     &pose_obj, &t, &end_obj, &want_points))
        return NULL;
    dk_pose ego, end;
    if (pose_arg(st, pose_obj, "ego_to_world", &ego) < 0) return NULL;
    if (end_obj != Py_None && pose_arg(st, end_obj, "ego_to_world_end", &end) < 0) return NULL;
    const dk_pose *endp = end_obj != Py_None ? &end : NULL;
    dk_sim *sim = ((dkpy_Sim *)obj)->sim;
    const dk_rig *rig = dk_sim_rig(sim);
    int ok_sensor = sensor >= 0 && sensor < rig->n_sensors &&
                    rig->sensors[sensor].kind == DK_SENSOR_LIDAR;
    int64_t shape[2] = {1, 1};
    if (ok_sensor) {
        shape[0] = rig->sensors[sensor].lidar.n_beams;
        shape[1] = rig->sensors[sensor].lidar.n_columns;
    }
    dk_tensor out[5];
    memset(out, 0, sizeof out);
    int rc = DK_OK;
    int64_t n_points = 0;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    if (!ok_sensor) {
        rc = dk_sim_render_lidar(sim, sensor, &ego, t, endp, NULL, NULL, NULL, NULL);
        if (rc == DK_OK) rc = DK_EINTERNAL;   /* unreachable: the sensor is no lidar */
    }
    for (int i = 0; i < 4 && rc == DK_OK; i++) rc = dk_tensor_alloc(&out[i], DK_F32, 2, shape);
    if (rc == DK_OK)
        rc = dk_sim_render_lidar(sim, sensor, &ego, t, endp, (float *)out[0].data,
                                 (float *)out[1].data, (float *)out[2].data, (float *)out[3].data);
    if (rc == DK_OK && want_points) {
        int64_t pshape[2] = {shape[0] * shape[1], 6};
        rc = dk_tensor_alloc(&out[4], DK_F32, 2, pshape);
        if (rc == DK_OK)
            rc = dk_sim_lidar_points(sim, sensor, &ego, t, endp, (const float *)out[0].data,
                                     (const float *)out[1].data, (const float *)out[2].data,
                                     (float *)out[4].data, pshape[0], &n_points);
        if (rc == DK_OK) out[4].shape[0] = n_points;   /* a prefix of the buffer */
    }
    if (rc != DK_OK) {
        msg_grab(&msg);
        for (int i = 0; i < 5; i++) dk_tensor_release(&out[i]);
    }
    Py_END_ALLOW_THREADS
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    static const char *const names[5] = {"range", "intensity", "raydrop", "alpha", "points"};
    PyObject *d = PyDict_New();
    int ok = d != NULL;
    for (int i = 0; i < (want_points ? 5 : 4); i++) {
        PyObject *v = ok ? tensor_wrap(st, &out[i]) : NULL;
        if (!v) {
            dk_tensor_release(&out[i]);
            ok = 0;
            continue;
        }
        if (PyDict_SetItemString(d, names[i], v) < 0) ok = 0;
        Py_DECREF(v);
    }
    if (!ok) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *sim_set_actor_pose(PyObject *obj, PyObject *args)
{
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    int id;
    double t;
    PyObject *pose_obj;
    if (!PyArg_ParseTuple(args, "idO:set_actor_pose", &id, &t, &pose_obj)) return NULL;
    dk_pose pose;
    if (pose_arg(st, pose_obj, "actor_to_world", &pose) < 0) return NULL;
    dk_sim *sim = ((dkpy_Sim *)obj)->sim;
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_sim_set_actor_pose(sim, id, t, &pose);
    if (rc != DK_OK) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    Py_RETURN_NONE;
}

static PyObject *sim_clear_actor_pose(PyObject *obj, PyObject *args)
{
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    int id;
    if (!PyArg_ParseTuple(args, "i:clear_actor_pose", &id)) return NULL;
    dk_sim *sim = ((dkpy_Sim *)obj)->sim;
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_sim_clear_actor_pose(sim, id);
    if (rc != DK_OK) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    Py_RETURN_NONE;
}

/* Actor pose at t as a row-major 4x4 in a tuple of 16 floats. */
static PyObject *sim_actor_pose(PyObject *obj, PyObject *args)
{
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    int id;
    double t;
    if (!PyArg_ParseTuple(args, "id:actor_pose", &id, &t)) return NULL;
    dk_sim *sim = ((dkpy_Sim *)obj)->sim;
    dk_pose p;
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_sim_actor_pose(sim, id, t, &p);
    if (rc != DK_OK) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    if (rc != DK_OK) return dkpy_raise(st, rc, &msg);
    double m[16];
    dk_pose_to_matrix(&p, m);
    return double_tuple(m, 16);
}

static PyMethodDef sim_methods[] = {
    {"sensors", sim_sensors, METH_NOARGS, "sensors() -> list of dict (the rig, rig_nuscenes layout)"},
    {"find_sensor", sim_find_sensor, METH_O, "find_sensor(name) -> int (dk_sim_find_sensor)"},
    {"render_camera", DKPY_KW(sim_render_camera),
     "render_camera(sensor, ego_to_world, timestamp, ego_to_world_end=None, want_depth=True)\n"
     "-> (rgb Tensor (H, W, 3), alpha Tensor (H, W), depth Tensor (H, W) or None)\n\n"
     "ego_to_world(_end): C-contiguous float64 4x4 (dk_sim_render_camera)."},
    {"render_lidar", DKPY_KW(sim_render_lidar),
     "render_lidar(sensor, ego_to_world, timestamp, ego_to_world_end=None, points=False)\n"
     "-> dict of Tensors: range, intensity, raydrop, alpha (beams, columns), and with\n"
     "points=True points (N, 6) = x, y, z, intensity, ring, time (dk_sim_render_lidar,\n"
     "dk_sim_lidar_points)."},
    {"set_actor_pose", sim_set_actor_pose, METH_VARARGS,
     "set_actor_pose(actor_id, timestamp, actor_to_world) (dk_sim_set_actor_pose)"},
    {"clear_actor_pose", sim_clear_actor_pose, METH_VARARGS,
     "clear_actor_pose(actor_id) (dk_sim_clear_actor_pose; -1 = every actor)"},
    {"actor_pose", sim_actor_pose, METH_VARARGS,
     "actor_pose(actor_id, t) -> tuple of 16 floats (row-major 4x4, dk_sim_actor_pose)"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot sim_slots[] = {
    {Py_tp_doc, (void *)"A closed-loop simulator (dk_sim) over a Scene and the nuScenes rig.\n"
                        "Made by sim_create. Use drivekit.sim.Simulator."},
    {Py_tp_dealloc, (void *)sim_dealloc},
    {Py_tp_methods, sim_methods},
    {0, NULL},
};

static PyType_Spec sim_spec = {
    .name = "drivekit._drivekit.Sim",
    .basicsize = sizeof(dkpy_Sim),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = sim_slots,
};

/* ------------------------------------------------------------------------ */
/* Training data loader (drivekit.data)                                      */

/* A loader owns the whole chain: the nuScenes tables, the sample source, the
 * pipeline, the sampler, its pool and the dk_loader. next() runs with the GIL
 * released; a batch comes back as Tensors viewing one shared buffer. */
typedef struct {
    PyObject_HEAD
    dk_nusc *db;
    dk_nusc_source *src;
    dk_pipeline *pipe;
    dk_sampler *sampler;
    dk_pool *pool;
    dk_loader *loader;
    int busy;
} dkpy_Loader;

static int loader_read(void *user, int64_t index, dk_sample *x, char *what, size_t cap)
{
    const dk_nusc_source *src = user;
    int rc = dk_nusc_source_read(src, index, x);
    const dk_group *fmt = dk_nusc_source_format(src);
    int tok = dk_group_find(fmt, DK_GROUP_ROOT, "token");
    if (rc == DK_OK && tok >= 0 && x->values[tok].data) {
        size_t n = (size_t)x->values[tok].shape[0];
        if (n >= cap) n = cap - 1;
        memcpy(what, x->values[tok].data, n);
        what[n] = 0;
    }
    return rc;
}

static void loader_free_parts(dkpy_Loader *self)
{
    dk_loader_destroy(self->loader);
    dk_pool_destroy(self->pool);
    dk_sampler_destroy(self->sampler);
    dk_pipeline_destroy(self->pipe);
    dk_nusc_source_destroy(self->src);
    dk_nusc_close(self->db);
    self->loader = NULL;
    self->pool = NULL;
    self->sampler = NULL;
    self->pipe = NULL;
    self->src = NULL;
    self->db = NULL;
}

static void loader_dealloc(PyObject *obj)
{
    dkpy_Loader *self = (dkpy_Loader *)obj;
    PyTypeObject *tp = Py_TYPE(obj);
    Py_BEGIN_ALLOW_THREADS
    loader_free_parts(self);
    Py_END_ALLOW_THREADS
    tp->tp_free(obj);
    Py_DECREF(tp);
}

static PyObject *py_loader_create(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"root", "version", "preset", "steps_json", "source", "batch_size",
                             "threads", "seed", "rank", "world_size", "sampler", "shuffle",
                             "drop_last", "prefetch", "on_error", "points", NULL};
    const char *root, *version = NULL, *preset = NULL, *steps_json = NULL, *source = "jpeg";
    const char *sampler = "shuffled", *on_error = "raise";
    int batch = 1, threads = 1, rank = 0, world = 1, shuffle = 1, drop_last = 0, prefetch = 2;
    int points = 0;
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|zzzsiiKiisppisp:loader_create", kwlist,
                                     &root, &version, &preset, &steps_json, &source, &batch,
                                     &threads, &seed, &rank, &world, &sampler, &shuffle,
                                     &drop_last, &prefetch, &on_error, &points))
        return NULL;
    dkpy_state *st = state_of_module(module);
    int seq = !strcmp(sampler, "sequence");
    if (!seq && strcmp(sampler, "shuffled"))
        return dkpy_invalid(st, "sampler must be 'shuffled' or 'sequence', not '%s'", sampler);
    dk_loader_policy policy;
    if (!strcmp(on_error, "raise"))
        policy = DK_LOADER_RAISE;
    else if (!strcmp(on_error, "skip"))
        policy = DK_LOADER_SKIP;
    else
        return dkpy_invalid(st, "on_error must be 'raise' or 'skip', not '%s'", on_error);
    if (threads < 1 || threads > 1024)
        return dkpy_invalid(st, "threads must be in [1, 1024], got %d", threads);
    PyTypeObject *tp = st->loader_type;
    dkpy_Loader *self = (dkpy_Loader *)tp->tp_alloc(tp, 0);
    if (!self) return NULL;
    int rc = DK_OK;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    dk_nusc_config nc;
    dk_nusc_config_init(&nc);
    nc.version = version;
    rc = dk_nusc_open(root, &nc, &self->db);
    if (!rc) rc = dk_nusc_source_create(self->db, points ? DK_NUSC_SOURCE_POINTS : 0, &self->src);
    dk_pipeline_config pc;
    dk_pipeline_config_init(&pc);
    pc.seed = seed;
    if (!rc) rc = dk_pipeline_create(dk_nusc_source_format(self->src), &pc, &self->pipe);
    if (!rc && preset) rc = dk_pipeline_add_preset(self->pipe, preset, source);
    if (!rc && steps_json) rc = dk_pipeline_add_json(self->pipe, steps_json, strlen(steps_json));
    int64_t *first = NULL, *length = NULL;
    int n_scenes = dk_nusc_num_scenes(self->db);
    dk_sampler_config sc;
    dk_sampler_config_init(&sc);
    sc.kind = seq ? DK_SAMPLER_SEQUENCE : DK_SAMPLER_SHUFFLED;
    sc.n = dk_nusc_num_samples(self->db);
    sc.batch_size = batch;
    sc.rank = rank;
    sc.world_size = world;
    sc.shuffle = shuffle;
    sc.drop_last = drop_last;
    sc.seed = seed;
    if (!rc && seq) {
        first = dk_malloc((size_t)(n_scenes ? n_scenes : 1) * sizeof *first);
        length = dk_malloc((size_t)(n_scenes ? n_scenes : 1) * sizeof *length);
        if (!first || !length) rc = DK_ENOMEM;
        for (int i = 0; i < n_scenes && !rc; i++) {
            dk_nusc_scene s;
            dk_nusc_get_scene(self->db, i, &s);
            first[i] = s.first_sample;
            length[i] = s.n_samples;
        }
        sc.n_scenes = n_scenes;
        sc.scene_first = first;
        sc.scene_length = length;
    }
    if (!rc) rc = dk_sampler_create(&sc, &self->sampler);
    dk_free(first);
    dk_free(length);
    if (!rc && threads > 1) {
        dk_pool_config plc;
        dk_pool_config_init(&plc);
        plc.n_threads = threads;
        rc = dk_pool_create(&plc, &self->pool);
    }
    if (!rc) {
        dk_loader_config lc;
        dk_loader_config_init(&lc);
        lc.read = loader_read;
        lc.read_user = self->src;
        lc.pipeline = self->pipe;
        lc.sampler = self->sampler;
        lc.pool = self->pool;
        lc.prefetch = prefetch;
        lc.policy = policy;
        rc = dk_loader_create(&lc, &self->loader);
    }
    if (rc) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    if (rc) {
        Py_DECREF(self);
        return dkpy_raise(st, rc, &msg);
    }
    return (PyObject *)self;
}

/* next() -> None at the end of an epoch, else (indices, epoch, fields) with
 * fields a list of (name, ragged, is_string, data, sizes or None). */
static PyObject *loader_next(PyObject *obj, PyObject *noargs)
{
    (void)noargs;
    dkpy_Loader *self = (dkpy_Loader *)obj;
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Loader.next() is already running in another thread");
        return NULL;
    }
    self->busy = 1;
    dk_batch b;
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_loader_next(self->loader, &b);
    if (rc && rc != DK_EOF) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (rc == DK_EOF) Py_RETURN_NONE;
    if (rc) return dkpy_raise(st, rc, &msg);
    PyObject *fields = PyList_New(b.n_fields), *idx = NULL, *out = NULL;
    if (!fields) goto done;
    for (int i = 0; i < b.n_fields; i++) {
        dk_batch_field *f = &b.fields[i];
        PyObject *data = tensor_wrap(st, &f->data);
        PyObject *sizes = NULL;
        if (data && f->ragged) sizes = tensor_wrap(st, &f->sizes);
        PyObject *item = data && (sizes || !f->ragged)
                             ? Py_BuildValue("(siiOO)", f->name, f->ragged,
                                             f->kind == DK_FIELD_STRING, data,
                                             sizes ? sizes : Py_None)
                             : NULL;
        Py_XDECREF(data);
        Py_XDECREF(sizes);
        if (!item) goto done;
        PyList_SET_ITEM(fields, i, item);
    }
    dk_tensor it;
    int64_t n = b.n_samples;
    if (dk_tensor_alloc(&it, DK_I64, 1, &n)) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(it.data, b.indices, (size_t)n * sizeof(int64_t));
    idx = tensor_wrap(st, &it);
    if (idx) out = Py_BuildValue("(OiO)", idx, b.epoch, fields);
done:
    Py_XDECREF(idx);
    Py_XDECREF(fields);
    dk_batch_free(&b);
    return out;
}

static PyObject *loader_stats(PyObject *obj, PyObject *noargs)
{
    (void)noargs;
    dkpy_Loader *self = (dkpy_Loader *)obj;
    dk_loader_stats s;
    dk_loader_get_stats(self->loader, &s);
    PyObject *steps = PyList_New(0);
    if (!steps) return NULL;
    for (int i = 0; i < dk_pipeline_num_steps(self->pipe); i++) {
        double sec;
        int64_t calls;
        dk_pipeline_step_stats(self->pipe, i, &sec, &calls);
        PyObject *t = Py_BuildValue("(sdL)", dk_pipeline_step_name(self->pipe, i), sec,
                                    (long long)calls);
        if (!t || PyList_Append(steps, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(steps);
            return NULL;
        }
        Py_DECREF(t);
    }
    double fsec;
    int64_t fcalls;
    dk_pipeline_fused_stats(self->pipe, &fsec, &fcalls);
    return Py_BuildValue("{sLsLsLsdsdsdsdsssNs(dL)}", "batches", (long long)s.batches, "samples",
                         (long long)s.samples, "skipped", (long long)s.skipped, "read_seconds",
                         s.read_seconds, "pipeline_seconds", s.pipeline_seconds, "collate_seconds",
                         s.collate_seconds, "wait_seconds", s.wait_seconds, "last_skipped",
                         s.last_skipped, "steps", steps, "image_fused", fsec, (long long)fcalls);
}

static PyObject *loader_info(PyObject *obj, PyObject *noargs)
{
    (void)noargs;
    dkpy_Loader *self = (dkpy_Loader *)obj;
    char *text = NULL;
    if (dk_group_describe(dk_pipeline_format(self->pipe), &text)) return PyErr_NoMemory();
    PyObject *r = Py_BuildValue("{sLsisLss}", "samples", (long long)dk_nusc_num_samples(self->db),
                                "scenes", dk_nusc_num_scenes(self->db), "batches_per_epoch",
                                (long long)dk_sampler_batches_per_epoch(self->sampler), "format",
                                text);
    dk_free(text);
    return r;
}

static PyObject *loader_set_epoch(PyObject *obj, PyObject *arg)
{
    dkpy_Loader *self = (dkpy_Loader *)obj;
    dkpy_state *st = state_of_type(Py_TYPE(obj));
    long e = PyLong_AsLong(arg);
    if (e == -1 && PyErr_Occurred()) return NULL;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Loader is busy");
        return NULL;
    }
    /* Batches of the old epoch already in flight are dropped. */
    dk_loader *old = self->loader;
    dk_loader_config lc;
    dk_loader_config_init(&lc);
    int rc;
    dkpy_msg msg = {{0}};
    Py_BEGIN_ALLOW_THREADS
    rc = dk_loader_reset(old, (int)e);
    if (rc) msg_grab(&msg);
    Py_END_ALLOW_THREADS
    (void)lc;
    if (rc) return dkpy_raise(st, rc, &msg);
    Py_RETURN_NONE;
}

static PyMethodDef loader_methods[] = {
    {"next", loader_next, METH_NOARGS,
     "next() -> None at the end of an epoch, else (indices, epoch, [(name, ragged, is_string, "
     "data, sizes), ...]) (dk_loader_next)"},
    {"stats", loader_stats, METH_NOARGS, "stats() -> dict (dk_loader_get_stats + step times)"},
    {"info", loader_info, METH_NOARGS, "info() -> dict: samples, scenes, batches_per_epoch, format"},
    {"set_epoch", loader_set_epoch, METH_O,
     "set_epoch(epoch): drop batches in flight and restart the sampler at `epoch`"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot loader_slots[] = {
    {Py_tp_doc, (void *)"A training-data loader (dk_loader over the nuScenes source).\n"
                        "Made by loader_create. Use drivekit.data.Loader."},
    {Py_tp_dealloc, (void *)loader_dealloc},
    {Py_tp_methods, loader_methods},
    {0, NULL},
};

static PyType_Spec loader_spec = {
    .name = "drivekit._drivekit.Loader",
    .basicsize = sizeof(dkpy_Loader),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = loader_slots,
};

static PyMethodDef dkpy_methods[] = {
    /* drivekit.ragged (private: use the drivekit.ragged module) */
    {"ragged_index_map", py_ragged_index_map, METH_VARARGS,
     "ragged_index_map(src, src_idx, dst, dst_idx, mode, threads=None)"},
    {"ragged_index_access", py_ragged_index_access, METH_VARARGS,
     "ragged_index_access(input, indices, filler, out, threads=None)"},
    {"ragged_index_access_backward", py_ragged_index_access_backward, METH_VARARGS,
     "ragged_index_access_backward(grad_out, indices, grad_in, threads=None)"},
    {"ragged_index_write", py_ragged_index_write, METH_VARARGS,
     "ragged_index_write(to_write, indices, to_write_into, threads=None)"},
    {"ragged_index_fill", py_ragged_index_fill, METH_VARARGS,
     "ragged_index_fill(dst, indices, value, threads=None)"},
    {"ragged_mask_from_indices", py_ragged_mask_from_indices, METH_VARARGS,
     "ragged_mask_from_indices(indices, mask, threads=None)"},
    {"ragged_count_mask", py_ragged_count_mask, METH_VARARGS,
     "ragged_count_mask(mask, batch_dims, counts, prefix, threads=None)"},
    {"ragged_indices_from_mask", py_ragged_indices_from_mask, METH_VARARGS,
     "ragged_indices_from_mask(mask, batch_dims, out, threads=None)"},
    {"ragged_bool_select", py_ragged_bool_select, METH_VARARGS,
     "ragged_bool_select(input, mask, filler, out, threads=None)"},
    {"ragged_bool_write", py_ragged_bool_write, METH_VARARGS,
     "ragged_bool_write(to_write, mask, to_write_into, threads=None)"},
    {"ragged_apply_mask", py_ragged_apply_mask, METH_VARARGS,
     "ragged_apply_mask(data, mask, invert, value, out, threads=None)"},
    {"ragged_set_padded", py_ragged_set_padded, METH_VARARGS,
     "ragged_set_padded(data, value, threads=None)"},
    {"ragged_sum", py_ragged_sum, METH_VARARGS,
     "ragged_sum(data, average, nans_to_zero, out, backward, threads=None)"},
    {"ragged_packed", py_ragged_packed, METH_VARARGS,
     "ragged_packed(to_packed, ragged, values, offsets, filler, threads=None)"},
    {"ragged_combine", py_ragged_combine, METH_VARARGS,
     "ragged_combine(parts, dim, filler, out, threads=None)"},
    {"ragged_assign", py_ragged_assign, METH_VARARGS,
     "ragged_assign(costs, row_ind, col_ind, total, threads=None)"},
    {"ragged_assign_padded", py_ragged_assign_padded, METH_VARARGS,
     "ragged_assign_padded(costs, rows, cols, row_ind, col_ind, n_pairs, total, threads=None)"},
    {"ragged_focal_loss", py_ragged_focal_loss, METH_VARARGS,
     "ragged_focal_loss(logits, labels, alpha, gamma, loss, grad, threads=None) -> float"},
    {"ragged_focal_cost", py_ragged_focal_cost, METH_VARARGS,
     "ragged_focal_cost(logits, labels, alpha, gamma, cost, grad_logits, threads=None)"},
    {"ragged_l1_loss", py_ragged_l1_loss, METH_VARARGS,
     "ragged_l1_loss(pred, target, code_weights, beta, loss, grad, threads=None) -> float"},
    {"ragged_giou", py_ragged_giou, METH_VARARGS,
     "ragged_giou(a, b, aligned, out, backward, grad_a, grad_b, threads=None)"},
    {"ragged_box_l1_cost", py_ragged_box_l1_cost, METH_VARARGS,
     "ragged_box_l1_cost(pred, gt, code_weights, n_codes, cost, backward, grad_pred, grad_gt,\n"
     "                   threads=None)"},
    {"ragged_detr3d_loss", py_ragged_detr3d_loss, METH_VARARGS,
     "ragged_detr3d_loss(cls_logits, box_preds, gt_labels, gt_boxes, cls_weight, reg_weight,\n"
     "                   alpha, gamma, code_weights, match_codes, grad_cls, grad_box, match,\n"
     "                   layer_losses, threads=None) -> (loss_cls, loss_bbox)"},
    {"ragged_draw_gaussians", py_ragged_draw_gaussians, METH_VARARGS,
     "ragged_draw_gaussians(heatmaps, centers, radii, labels, diameter_to_sigma, k, threads=None)"},
    {"ragged_gaussian_radius", py_ragged_gaussian_radius, METH_VARARGS,
     "ragged_gaussian_radius(height, width, min_overlap) -> float"},
    {"version", py_version, METH_NOARGS, "version() -> str\n\nLibrary version \"MAJOR.MINOR.PATCH\"."},
    {"alloc_live", py_alloc_live, METH_NOARGS,
     "alloc_live() -> int\n\nLive drivekit allocations (allocations minus frees); for leak tests."},
    {"buffer_cache", py_buffer_cache, METH_VARARGS,
     "buffer_cache(limit=None) -> dict\n\nSets the byte limit of the buffer cache (released\n"
     "buffers of 1 MiB or more kept for reuse; 0 frees them and turns it off) when limit is\n"
     "given, and returns {limit, bytes, blocks, hits, previous_limit}."},
    {"ffmpeg_log_level", py_ffmpeg_log_level, METH_VARARGS,
     "ffmpeg_log_level(level=None) -> str\n\nThe level of FFmpeg's own log messages before\n"
     "the call; sets it when level is given (dk_video_set_ffmpeg_log_level)."},
    {"status_str", py_status_str, METH_O,
     "status_str(code) -> str\n\nName of a DK_E* status code."},
    {"jpeg_info", py_jpeg_info, METH_O,
     "jpeg_info(data) -> dict\n\nHeader of a JPEG: width, height, subsampling, colorspace."},
    {"decode_jpeg", DKPY_KW(py_decode_jpeg),
     "decode_jpeg(data, *, format='rgb', scale=None, min_size=None, fast_dct=False,\n"
     "            allow_warnings=False) -> Tensor (H, W, C) uint8"},
    {"decode_png", DKPY_KW(py_decode_png),
     "decode_png(data, format='rgb') -> Tensor (H, W, C) uint8"},
    {"encode_jpeg", DKPY_KW(py_encode_jpeg),
     "encode_jpeg(image, quality=95, format=None, subsamp444=False) -> bytes"},
    {"encode_png", py_encode_png, METH_O, "encode_png(image) -> bytes"},
    {"read_image", DKPY_KW(py_read_image),
     "read_image(path, *, format='rgb', scale=None, min_size=None, fast_dct=False,\n"
     "           allow_warnings=False) -> Tensor (H, W, C) uint8"},
    {"write_image", DKPY_KW(py_write_image), "write_image(path, image, quality=95) -> None"},
    {"philox4x32", py_philox4x32, METH_VARARGS,
     "philox4x32(ctr, key) -> (int, int, int, int)\n\nOne Philox4x32-10 block."},
    {"rng_u32", DKPY_KW(py_rng_u32),
     "rng_u32(seed, stream, n, offset=0, threads=1) -> Tensor (n,) uint32"},
    {"rng_uniform", DKPY_KW(py_rng_uniform),
     "rng_uniform(seed, stream, n, offset=0, threads=1) -> Tensor (n,) float32"},
    {"lidar_preset", py_lidar_preset, METH_O,
     "lidar_preset(n_beams) -> dict\n\nThe 32-, 64- or 128-beam spinning-lidar preset "
     "(dk_lidar_model_preset)."},
    {"lidar_rays", py_lidar_rays, METH_O,
     "lidar_rays(model) -> (Tensor (beams, columns, 3) float64, Tensor (columns,) float64)\n\n"
     "Unit beam directions (sensor FLU frame) and column firing times; model is a preset\n"
     "number or a dict like lidar_preset()'s."},
    {"rig_nuscenes", DKPY_KW(py_rig_nuscenes),
     "rig_nuscenes(width=1600, height=900) -> list of dict\n\nThe nuScenes-like sensor rig "
     "(dk_rig_nuscenes); cameras as Camera(**d) keyword dicts."},
    {"video_get_frames_multi", DKPY_KW(py_video_get_frames_multi),
     "video_get_frames_multi(videos, requests, threads=None, with_status=False, stack=-1)\n\n"
     "Frames of several Video objects in one call; requests are (video, frame) pairs."},
    {"scene_load_ply", DKPY_KW(py_scene_load_ply),
     "scene_load_ply(path, allow_invalid=False) -> Scene (dk_scene_load_ply)"},
    {"loader_create", DKPY_KW(py_loader_create),
     "loader_create(root, version=None, preset=None, steps_json=None, source='jpeg', batch_size=1, "
     "threads=1, seed=0, rank=0, world_size=1, sampler='shuffled', shuffle=True, drop_last=False, "
     "prefetch=2, on_error='raise', points=False) -> Loader"},
    {"sim_create", DKPY_KW(py_sim_create),
     "sim_create(scene, width=1600, height=900, threads=1, rolling_shutter=True,\n"
     "           background=(0, 0, 0), tracks=None) -> Sim (dk_sim_create on the nuScenes\n"
     "rig; tracks: a tracks JSON path for dk_sim_load_tracks_json)"},
    {"scene_from_scenario", DKPY_KW(py_scene_from_scenario),
     "scene_from_scenario(scenario=None, *, seed=1, duration=20.0, density=4.0,\n"
     "                    object_density=16.0, margin=40.0, sh_degree=0, include=0x7f,\n"
     "                    jitter_seed=0) -> Scene (dk_scene_from_scenario of a scenario JSON\n"
     "                    file, or of dk_world_generate with seed and duration)"},
    {"scene_from_arrays", py_scene_from_arrays, METH_VARARGS,
     "scene_from_arrays(n, sh_degree, means, scales_log, rotations_wxyz, opacity_logit, sh)\n"
     "-> Scene; C-contiguous float32 buffers of n*3, n*3, n*4, n, n*3*K elements"},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------------ */
/* Module lifecycle                                                          */

static int dkpy_exec(PyObject *m)
{
    if (dk_version() != DK_VERSION_HEX) {
        PyErr_Format(PyExc_ImportError,
                     "drivekit._drivekit was built for drivekit %s (0x%06x) but links library "
                     "version %s (0x%06x)",
                     DK_VERSION_STRING, DK_VERSION_HEX, dk_version_str(), dk_version());
        return -1;
    }
    dkpy_state *st = state_of_module(m);
    st->tensor_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &tensor_spec, NULL);
    if (!st->tensor_type || PyModule_AddType(m, st->tensor_type) < 0) return -1;
    st->pool_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &pool_spec, NULL);
    if (!st->pool_type || PyModule_AddType(m, st->pool_type) < 0) return -1;
    st->camera_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &camera_spec, NULL);
    if (!st->camera_type || PyModule_AddType(m, st->camera_type) < 0) return -1;
    st->video_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &video_spec, NULL);
    if (!st->video_type || PyModule_AddType(m, st->video_type) < 0) return -1;
    st->scene_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &scene_spec, NULL);
    if (!st->scene_type || PyModule_AddType(m, st->scene_type) < 0) return -1;
    st->sim_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &sim_spec, NULL);
    if (!st->sim_type || PyModule_AddType(m, st->sim_type) < 0) return -1;
    st->loader_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &loader_spec, NULL);
    if (!st->loader_type || PyModule_AddType(m, st->loader_type) < 0) return -1;

    for (int i = 0; i < DKPY_EXC_COUNT; i++) {
        PyObject *bases = i == DKPY_EXC_ERROR
                              ? PyTuple_Pack(1, *dkpy_exc_table[i].builtin)
                              : PyTuple_Pack(2, st->exc[DKPY_EXC_ERROR], *dkpy_exc_table[i].builtin);
        if (!bases) return -1;
        char qualname[96];
        PyOS_snprintf(qualname, sizeof qualname, "drivekit.%s", dkpy_exc_table[i].name);
        st->exc[i] = PyErr_NewExceptionWithDoc(qualname, dkpy_exc_table[i].doc, bases, NULL);
        Py_DECREF(bases);
        if (!st->exc[i]) return -1;
        if (PyModule_AddObjectRef(m, dkpy_exc_table[i].name, st->exc[i]) < 0) return -1;
    }
    if (PyModule_AddStringConstant(m, "__version__", DK_VERSION_STRING) < 0) return -1;
    if (PyModule_AddIntConstant(m, "VERSION_HEX", DK_VERSION_HEX) < 0) return -1;
    static const struct {
        const char *name;
        int value;
    } codes[] = {
        {"OK", DK_OK}, {"EINVAL", DK_EINVAL}, {"ENOMEM", DK_ENOMEM}, {"EIO", DK_EIO},
        {"ENOENT", DK_ENOENT}, {"EINVALIDDATA", DK_EINVALIDDATA},
        {"EUNSUPPORTED", DK_EUNSUPPORTED}, {"ERANGE", DK_ERANGE}, {"EOVERFLOW", DK_EOVERFLOW},
        {"ESTATE", DK_ESTATE}, {"EAGAIN", DK_EAGAIN}, {"EOF", DK_EOF},
        {"ECANCELED", DK_ECANCELED}, {"ESYS", DK_ESYS}, {"EINTERNAL", DK_EINTERNAL},
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (PyModule_AddIntConstant(m, codes[i].name, codes[i].value) < 0) return -1;
    return 0;
}

static int dkpy_traverse(PyObject *m, visitproc visit, void *arg)
{
    dkpy_state *st = state_of_module(m);
    if (!st) return 0;
    Py_VISIT(st->tensor_type);
    Py_VISIT(st->pool_type);
    Py_VISIT(st->camera_type);
    Py_VISIT(st->video_type);
    Py_VISIT(st->scene_type);
    Py_VISIT(st->sim_type);
    Py_VISIT(st->loader_type);
    for (int i = 0; i < DKPY_EXC_COUNT; i++) Py_VISIT(st->exc[i]);
    return 0;
}

static int dkpy_clear(PyObject *m)
{
    dkpy_state *st = state_of_module(m);
    if (!st) return 0;
    Py_CLEAR(st->tensor_type);
    Py_CLEAR(st->pool_type);
    Py_CLEAR(st->camera_type);
    Py_CLEAR(st->video_type);
    Py_CLEAR(st->scene_type);
    Py_CLEAR(st->sim_type);
    Py_CLEAR(st->loader_type);
    for (int i = 0; i < DKPY_EXC_COUNT; i++) Py_CLEAR(st->exc[i]);
    return 0;
}

static void dkpy_free(void *m)
{
    dkpy_clear((PyObject *)m);
}

static PyModuleDef_Slot dkpy_slots[] = {
    {Py_mod_exec, (void *)dkpy_exec},
    {0, NULL},
};

static struct PyModuleDef dkpy_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "drivekit._drivekit",
    .m_doc = "C extension of drivekit; use the `drivekit` package instead.",
    .m_size = sizeof(dkpy_state),
    .m_methods = dkpy_methods,
    .m_slots = dkpy_slots,
    .m_traverse = dkpy_traverse,
    .m_clear = dkpy_clear,
    .m_free = dkpy_free,
};

PyMODINIT_FUNC PyInit__drivekit(void)
{
    return PyModuleDef_Init(&dkpy_module);
}
