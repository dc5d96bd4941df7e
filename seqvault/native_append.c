/* The append kernel: check one append call's columns against the schema, group the rows by
 * user, copy them into arrays the store owns, and encode the log record's payload, in one call.
 *
 * Why: an append of 1 to 100 events spent ~30 us in Python (validation ~8, the msgpack record
 * ~7, copies and grouping), against ~1 us of system call; RocksDB does the same append in
 * ~15 us (docs/design/realtime.md, "Append kernel").
 *
 * Scope: only the plain cases. Any column that is not a 1-D numpy array of exactly the
 * column's dtype (native byte order) or, for integer columns, a list of Python ints, or, for
 * string columns, a list or object array of str; a value out of range; a NaN where the schema refuses them; a timestamp below
 * `min_ts` (implausible or past retention); more than MAX_ROWS rows: the kernel returns None
 * and the Python reference path (seqvault/validate.py, wal.encode_append) runs, which names
 * the problem. So the kernel never raises a validation error of its own, and what it accepts
 * the Python path accepts too, with the same arrays and byte-identical payload (tests compare
 * both).
 *
 * The payload is the msgpack map of docs/format/wal.md, "Append record", written as msgpack's
 * packer writes it (smallest integer forms, str8/bin types):
 *   {"v": version, "k": [keys], "n": [counts], "t": <int64 LE bytes>, "c": {name: <bytes>}}
 */
#define PY_SSIZE_T_CLEAN
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <Python.h>
#include <numpy/arrayobject.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define MAX_ROWS 1024 /* stack buffers of the grouping: ~40 KiB */
#define MAX_COLS 256

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define LITTLE_HOST 1
#else
#define LITTLE_HOST 0 /* the record is little-endian: leave big-endian hosts to Python */
#endif

/* ------------------------------------------------------------------ msgpack writer */
typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf_t;

static int reserve(buf_t *b, size_t more) {
    if (b->len + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more) cap *= 2;
    uint8_t *p = PyMem_Realloc(b->p, cap);
    if (!p) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static void put_be(uint8_t *o, uint64_t v, int n) {
    for (int i = n - 1; i >= 0; i--) {
        o[i] = (uint8_t)v;
        v >>= 8;
    }
}

static int w_head(buf_t *b, uint8_t tag, uint64_t v, int n) {
    if (reserve(b, 1 + n) < 0) return -1;
    b->p[b->len++] = tag;
    put_be(b->p + b->len, v, n);
    b->len += n;
    return 0;
}

/* msgpack's packer: positive values in fixint/uint8..64, negative ones in the smallest of
 * negative fixint/int8..64. */
static int w_int(buf_t *b, int64_t d) {
    if (d < -(1 << 5)) {
        if (d < -(1 << 15)) {
            if (d < -((int64_t)1 << 31)) return w_head(b, 0xd3, (uint64_t)d, 8);
            return w_head(b, 0xd2, (uint64_t)(uint32_t)d, 4);
        }
        if (d < -(1 << 7)) return w_head(b, 0xd1, (uint64_t)(uint16_t)d, 2);
        return w_head(b, 0xd0, (uint64_t)(uint8_t)d, 1);
    }
    if (d < (1 << 7)) return w_head(b, (uint8_t)d, 0, 0);
    if (d < (1 << 16)) {
        if (d < (1 << 8)) return w_head(b, 0xcc, (uint64_t)d, 1);
        return w_head(b, 0xcd, (uint64_t)d, 2);
    }
    if (d < ((int64_t)1 << 32)) return w_head(b, 0xce, (uint64_t)d, 4);
    return w_head(b, 0xcf, (uint64_t)d, 8);
}

static int w_raw(buf_t *b, const void *data, size_t n) {
    if (reserve(b, n) < 0) return -1;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

static int w_str(buf_t *b, const char *s, size_t n) {
    int r;
    if (n < 32) r = w_head(b, (uint8_t)(0xa0 | n), 0, 0);
    else if (n < 256) r = w_head(b, 0xd9, n, 1);
    else if (n < 65536) r = w_head(b, 0xda, n, 2);
    else r = w_head(b, 0xdb, n, 4);
    return r < 0 ? -1 : w_raw(b, s, n);
}

static int w_bin_head(buf_t *b, size_t n) {
    if (n < 256) return w_head(b, 0xc4, n, 1);
    if (n < 65536) return w_head(b, 0xc5, n, 2);
    return w_head(b, 0xc6, n, 4);
}

static int w_container(buf_t *b, size_t n, uint8_t fix, uint8_t t16, uint8_t t32) {
    if (n < 16) return w_head(b, (uint8_t)(fix | n), 0, 0);
    if (n < 65536) return w_head(b, t16, n, 2);
    return w_head(b, t32, n, 4);
}

static int w_pystr(buf_t *b, PyObject *s) {
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    return u ? w_str(b, u, (size_t)n) : -1;
}

/* ------------------------------------------------------------------ reading columns */
typedef struct {
    const uint8_t *data; /* numpy input: first element; NULL for a list */
    npy_intp stride;
    PyObject *list;
    int typenum, size;
} src_t;

/* Integer range of a numpy integer type number. */
static void int_range(int typenum, int64_t *lo, uint64_t *hi) {
    switch (typenum) {
    case NPY_INT8: *lo = INT8_MIN; *hi = INT8_MAX; break;
    case NPY_INT16: *lo = INT16_MIN; *hi = INT16_MAX; break;
    case NPY_INT32: *lo = INT32_MIN; *hi = INT32_MAX; break;
    case NPY_INT64: *lo = INT64_MIN; *hi = INT64_MAX; break;
    case NPY_UINT8: *lo = 0; *hi = UINT8_MAX; break;
    case NPY_UINT16: *lo = 0; *hi = UINT16_MAX; break;
    case NPY_UINT32: *lo = 0; *hi = UINT32_MAX; break;
    default: *lo = 0; *hi = UINT64_MAX; break;
    }
}

static int is_int_type(int t) {
    return t == NPY_INT8 || t == NPY_INT16 || t == NPY_INT32 || t == NPY_INT64 ||
           t == NPY_UINT8 || t == NPY_UINT16 || t == NPY_UINT32 || t == NPY_UINT64;
}

/* 1: usable (fills src, *n checked or set when *n < 0); 0: not a plain case. */
static int open_src(PyObject *v, int typenum, Py_ssize_t *n, src_t *src) {
    src->typenum = typenum;
    src->list = NULL;
    src->data = NULL;
    if (PyArray_CheckExact(v)) {
        PyArrayObject *a = (PyArrayObject *)v;
        PyArray_Descr *d = PyArray_DESCR(a);
        if (PyArray_NDIM(a) != 1 || PyArray_TYPE(a) != typenum || PyArray_ISBYTESWAPPED(a))
            return 0;
        (void)d;
        Py_ssize_t len = (Py_ssize_t)PyArray_DIM(a, 0);
        if (*n < 0) *n = len;
        else if (len != *n) return 0;
        src->data = PyArray_DATA(a);
        src->stride = PyArray_STRIDE(a, 0);
        src->size = (int)PyArray_ITEMSIZE(a);
        return 1;
    }
    if (PyList_CheckExact(v) && (is_int_type(typenum) || typenum == NPY_OBJECT)) {
        Py_ssize_t len = PyList_GET_SIZE(v);
        if (*n < 0) *n = len;
        else if (len != *n) return 0;
        src->list = v;
        src->size = typenum == NPY_OBJECT ? (int)sizeof(PyObject *)
                    : (typenum == NPY_INT8 || typenum == NPY_UINT8) ? 1
                    : (typenum == NPY_INT16 || typenum == NPY_UINT16) ? 2
                    : (typenum == NPY_INT32 || typenum == NPY_UINT32) ? 4 : 8;
        return 1;
    }
    return 0;
}

/* Row i of a list source into out (the column's item size). 1: ok, 0: not a plain value
 * (not an int, a bool, out of range); -1: error set. */
static int list_value(const src_t *s, Py_ssize_t i, uint8_t *out) {
    PyObject *o = PyList_GET_ITEM(s->list, i);
    if (!PyLong_CheckExact(o)) return 0; /* bool, numpy scalars, floats: Python decides */
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    uint64_t u;
    if (overflow > 0) {
        if (s->typenum != NPY_UINT64) return 0;
        u = PyLong_AsUnsignedLongLong(o);
        if (u == (uint64_t)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
    } else if (overflow < 0) {
        return 0;
    } else {
        int64_t lo;
        uint64_t hi;
        int_range(s->typenum, &lo, &hi);
        if (v < lo) return 0;
        if (v >= 0 && (uint64_t)v > hi) return 0;
        u = (uint64_t)v;
    }
    switch (s->size) {
    case 1: { uint8_t x = (uint8_t)u; memcpy(out, &x, 1); break; }
    case 2: { uint16_t x = (uint16_t)u; memcpy(out, &x, 2); break; }
    case 4: { uint32_t x = (uint32_t)u; memcpy(out, &x, 4); break; }
    default: memcpy(out, &u, 8);
    }
    return 1;
}

/* Copy source rows in `order` into dst (contiguous). Returns as list_value. */
static int gather(const src_t *s, const Py_ssize_t *order, Py_ssize_t n, uint8_t *dst) {
    for (Py_ssize_t j = 0; j < n; j++) {
        Py_ssize_t i = order[j];
        if (s->data) {
            memcpy(dst + j * s->size, s->data + i * s->stride, (size_t)s->size);
        } else {
            int r = list_value(s, i, dst + j * s->size);
            if (r <= 0) return r;
        }
    }
    return 1;
}

/* ------------------------------------------------------------------ the call */
static PyObject *fallback(PyObject **owned, int n_owned, buf_t *b) {
    for (int i = 0; i < n_owned; i++) Py_XDECREF(owned[i]);
    PyMem_Free(b->p);
    Py_RETURN_NONE;
}

static PyObject *fail(PyObject **owned, int n_owned, buf_t *b) {
    for (int i = 0; i < n_owned; i++) Py_XDECREF(owned[i]);
    PyMem_Free(b->p);
    return NULL;
}

PyDoc_STRVAR(prepare_doc,
"prepare(spec, key, users, columns, min_ts)\n--\n\n"
"One append call checked, grouped and encoded: (keys, counts, ts, cols, payload), or None\n"
"when the call is not a plain case (the Python path then runs and names any problem).\n"
"spec: (version, time_name, max_ts, ((name, typenum, allow_nan), ...)); key: the user of\n"
"every row when users is None; users: an int64 array or list of ints otherwise.");

static PyObject *prepare_impl(PyObject *spec, PyObject *key, PyObject *users, PyObject *columns,
                              long long min_ts);

static PyObject *prepare(PyObject *self, PyObject *args) {
    PyObject *spec, *key, *users, *columns;
    long long min_ts;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!OOO!L", &PyTuple_Type, &spec, &key, &users, &PyDict_Type,
                          &columns, &min_ts))
        return NULL;
    return prepare_impl(spec, key, users, columns, min_ts);
}

/* One call's columns, checked against the spec and grouped by user, before any output exists:
 * what `prepare` and `append_call` share. */
typedef struct {
    long long version, max_ts;
    PyObject *cols_spec; /* borrowed from spec */
    Py_ssize_t n, ncols, nk;
    int batch; /* users given: nk users in ukeys/counts; else every row is the one key's */
    src_t ts_src, srcs[MAX_COLS];
    int allow_nan[MAX_COLS];
    Py_ssize_t order[MAX_ROWS];
    int64_t ukeys[MAX_ROWS];
    Py_ssize_t counts[MAX_ROWS];
} call_t;

/* Fill `c` from the call's arguments. 1: a plain case so far; 0: not one; -1: error set. */
static int open_call(call_t *c, PyObject *spec, PyObject *users, PyObject *columns) {
    if (!LITTLE_HOST) return 0;
    PyObject *time_name;
    if (!PyArg_ParseTuple(spec, "LOLO!", &c->version, &time_name, &c->max_ts, &PyTuple_Type,
                          &c->cols_spec))
        return -1;
    Py_ssize_t ncols = c->ncols = PyTuple_GET_SIZE(c->cols_spec);
    c->batch = users != Py_None;
    if (ncols > MAX_COLS) return 0;
    /* exactly the schema's columns (the user column too, for a batch): no more, no fewer */
    if (PyDict_GET_SIZE(columns) != ncols + 1 + c->batch) return 0;
    Py_ssize_t n = -1;
    PyObject *tv = PyDict_GetItemWithError(columns, time_name);
    if (!tv) return PyErr_Occurred() ? -1 : 0;
    if (!open_src(tv, NPY_INT64, &n, &c->ts_src)) return 0;
    if (n <= 0 || n > MAX_ROWS) return 0;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        PyObject *cs = PyTuple_GET_ITEM(c->cols_spec, i);
        PyObject *name = PyTuple_GET_ITEM(cs, 0);
        int typenum = (int)PyLong_AsLong(PyTuple_GET_ITEM(cs, 1));
        if (typenum == -1 && PyErr_Occurred()) return -1;
        c->allow_nan[i] = PyObject_IsTrue(PyTuple_GET_ITEM(cs, 2));
        PyObject *v = PyDict_GetItemWithError(columns, name);
        if (!v) return PyErr_Occurred() ? -1 : 0;
        if (!open_src(v, typenum, &n, &c->srcs[i])) return 0;
    }
    c->n = n;
    /* rows grouped by user, each user's rows in call order, users in ascending key order (a
     * stable sort, as validate_batch's np.argsort(kind="stable")) */
    Py_ssize_t *order = c->order;
    for (Py_ssize_t i = 0; i < n; i++) order[i] = i;
    c->nk = 0;
    if (!c->batch) return 1;
    src_t user_src;
    if (!open_src(users, NPY_INT64, &n, &user_src)) return 0;
    int64_t uv[MAX_ROWS];
    for (Py_ssize_t i = 0; i < n; i++) {
        int r = user_src.data ? (memcpy(&uv[i], user_src.data + i * user_src.stride, 8), 1)
                              : list_value(&user_src, i, (uint8_t *)&uv[i]);
        if (r <= 0) return r;
    }
    int sorted = 1;
    for (Py_ssize_t i = 1; i < n && sorted; i++) sorted = uv[i - 1] <= uv[i];
    if (!sorted) {
        /* stable merge sort of row numbers by user */
        Py_ssize_t tmp[MAX_ROWS];
        Py_ssize_t *a = order, *t = tmp;
        for (Py_ssize_t w = 1; w < n; w *= 2) {
            for (Py_ssize_t lo = 0; lo < n; lo += 2 * w) {
                Py_ssize_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
                Py_ssize_t i = lo, j = mid, k = lo;
                while (i < mid && j < hi) t[k++] = uv[a[j]] < uv[a[i]] ? a[j++] : a[i++];
                while (i < mid) t[k++] = a[i++];
                while (j < hi) t[k++] = a[j++];
            }
            Py_ssize_t *s = a;
            a = t;
            t = s;
        }
        if (a != order) memcpy(order, a, (size_t)n * sizeof(Py_ssize_t));
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        int64_t u = uv[order[j]];
        if (c->nk && c->ukeys[c->nk - 1] == u) {
            c->counts[c->nk - 1]++;
        } else {
            c->ukeys[c->nk] = u;
            c->counts[c->nk++] = 1;
        }
    }
    return 1;
}

/* The timestamps in group order into tsd: in 0..max_ts and not below min_ts (implausible or
 * past retention). As list_value: 1, 0 (not plain), -1 (error set). */
static int fill_ts(const call_t *c, int64_t *tsd, long long min_ts) {
    int r = gather(&c->ts_src, c->order, c->n, (uint8_t *)tsd);
    if (r <= 0) return r;
    for (Py_ssize_t i = 0; i < c->n; i++)
        if (tsd[i] < 0 || tsd[i] > c->max_ts || tsd[i] < min_ts) return 0;
    return 1;
}

/* Numeric column `i` in group order into d: canonical bools, no NaN where the schema refuses
 * them. As list_value. */
static int fill_col(const call_t *c, Py_ssize_t i, uint8_t *d) {
    const src_t *s = &c->srcs[i];
    int r = gather(s, c->order, c->n, d);
    if (r <= 0) return r;
    int t = s->typenum;
    if (t == NPY_BOOL) {
        for (Py_ssize_t j = 0; j < c->n; j++)
            if (d[j] > 1) return 0; /* not a canonical bool */
    } else if (!c->allow_nan[i] && (t == NPY_FLOAT32 || t == NPY_FLOAT64)) {
        for (Py_ssize_t j = 0; j < c->n; j++) {
            double x = t == NPY_FLOAT32 ? (double)((float *)d)[j] : ((double *)d)[j];
            if (x != x) return 0;
        }
    }
    return 1;
}

/* The record's payload (docs/format/wal.md, "Append record") appended to b: the keys (`key`
 * for a one-user call, else c->ukeys), the counts, tsd, and each column's rows (data[i]; a
 * string column's are str objects). 1, 0 (a key or string Python's path must judge), -1. */
static int write_payload(buf_t *b, const call_t *c, PyObject *key, const int64_t *tsd,
                         void *const *data) {
    Py_ssize_t nkeys = c->batch ? c->nk : 1, n = c->n;
    if (w_head(b, 0x85, 0, 0) < 0 || w_str(b, "v", 1) < 0 || w_int(b, c->version) < 0 ||
        w_str(b, "k", 1) < 0 || w_container(b, (size_t)nkeys, 0x90, 0xdc, 0xdd) < 0)
        return -1;
    if (c->batch) {
        for (Py_ssize_t k = 0; k < nkeys; k++)
            if (w_int(b, c->ukeys[k]) < 0) return -1;
    } else if (PyLong_CheckExact(key)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(key, &overflow);
        if (overflow) return 0; /* past int64: Python's coerce_user names it */
        if ((v == -1 && PyErr_Occurred()) || w_int(b, v) < 0) return -1;
    } else if (PyUnicode_CheckExact(key)) {
        if (w_pystr(b, key) < 0) return -1;
    } else {
        return 0;
    }
    if (w_str(b, "n", 1) < 0 || w_container(b, (size_t)nkeys, 0x90, 0xdc, 0xdd) < 0) return -1;
    for (Py_ssize_t k = 0; k < nkeys; k++)
        if (w_int(b, c->batch ? c->counts[k] : n) < 0) return -1;
    if (w_str(b, "t", 1) < 0 || w_bin_head(b, (size_t)n * 8) < 0 ||
        w_raw(b, tsd, (size_t)n * 8) < 0 || w_str(b, "c", 1) < 0 ||
        w_container(b, (size_t)c->ncols, 0x80, 0xde, 0xdf) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < c->ncols; i++) {
        PyObject *name = PyTuple_GET_ITEM(PyTuple_GET_ITEM(c->cols_spec, i), 0);
        if (c->srcs[i].typenum == NPY_OBJECT) { /* a list of str, as msgpack packs arr.tolist() */
            if (w_pystr(b, name) < 0 || w_container(b, (size_t)n, 0x90, 0xdc, 0xdd) < 0)
                return -1;
            PyObject *const *o = (PyObject *const *)data[i];
            for (Py_ssize_t j = 0; j < n; j++) {
                if (w_pystr(b, o[j]) < 0) {
                    if (!PyErr_ExceptionMatches(PyExc_UnicodeError)) return -1;
                    PyErr_Clear(); /* a lone surrogate: Python's path says what is wrong */
                    return 0;
                }
            }
            continue;
        }
        size_t nb = (size_t)n * (size_t)c->srcs[i].size;
        if (w_pystr(b, name) < 0 || w_bin_head(b, nb) < 0 || w_raw(b, data[i], nb) < 0)
            return -1;
    }
    return 1;
}

/* prepare's work; spec a tuple and columns a dict (checked by the callers). */
static PyObject *prepare_impl(PyObject *spec, PyObject *key, PyObject *users, PyObject *columns,
                              long long min_ts) {
    call_t c;
    int r = open_call(&c, spec, users, columns);
    if (r <= 0) return r < 0 ? NULL : (Py_INCREF(Py_None), Py_None);
    Py_ssize_t n = c.n, ncols = c.ncols;
    PyObject *owned[4] = {NULL};
    int n_owned = 0;
    buf_t b = {NULL, 0, 0};
    npy_intp dims[1] = {n};

    PyObject *ts = PyArray_SimpleNew(1, dims, NPY_INT64);
    if (!ts) return fail(owned, n_owned, &b);
    owned[n_owned++] = ts;
    int64_t *tsd = (int64_t *)PyArray_DATA((PyArrayObject *)ts);
    if ((r = fill_ts(&c, tsd, min_ts)) <= 0)
        return r < 0 ? fail(owned, n_owned, &b) : fallback(owned, n_owned, &b);

    PyObject *cols = PyDict_New();
    if (!cols) return fail(owned, n_owned, &b);
    owned[n_owned++] = cols;
    void *data[MAX_COLS];
    for (Py_ssize_t i = 0; i < ncols; i++) {
        PyObject *cs = PyTuple_GET_ITEM(c.cols_spec, i);
        PyObject *arr = PyArray_SimpleNew(1, dims, c.srcs[i].typenum);
        if (!arr) return fail(owned, n_owned, &b);
        int set = PyDict_SetItem(cols, PyTuple_GET_ITEM(cs, 0), arr);
        Py_DECREF(arr); /* the dict holds it */
        if (set < 0) return fail(owned, n_owned, &b);
        uint8_t *d = data[i] = PyArray_DATA((PyArrayObject *)arr);
        if (c.srcs[i].typenum == NPY_OBJECT) { /* a string column: exact str objects only */
            PyObject **o = (PyObject **)d;
            for (Py_ssize_t j = 0; j < n; j++) {
                Py_ssize_t k = c.order[j];
                PyObject *x = c.srcs[i].list ? PyList_GET_ITEM(c.srcs[i].list, k)
                                             : *(PyObject **)(c.srcs[i].data + k * c.srcs[i].stride);
                if (!x || !PyUnicode_CheckExact(x)) return fallback(owned, n_owned, &b);
                Py_INCREF(x);
                Py_XSETREF(o[j], x);
            }
            continue;
        }
        if ((r = fill_col(&c, i, d)) <= 0)
            return r < 0 ? fail(owned, n_owned, &b) : fallback(owned, n_owned, &b);
    }

    /* keys and counts as Python lists, as validate_batch returns them */
    Py_ssize_t nkeys = c.batch ? c.nk : 1;
    PyObject *keys = PyList_New(nkeys);
    if (!keys) return fail(owned, n_owned, &b);
    owned[n_owned++] = keys;
    PyObject *cnts = PyList_New(nkeys);
    if (!cnts) return fail(owned, n_owned, &b);
    owned[n_owned++] = cnts;
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        PyObject *kk = c.batch ? PyLong_FromLongLong(c.ukeys[k]) : (Py_INCREF(key), key);
        if (!kk) return fail(owned, n_owned, &b);
        PyList_SET_ITEM(keys, k, kk);
        PyObject *cc = PyLong_FromSsize_t(c.batch ? c.counts[k] : n);
        if (!cc) return fail(owned, n_owned, &b);
        PyList_SET_ITEM(cnts, k, cc);
    }
    if ((r = write_payload(&b, &c, key, tsd, data)) <= 0)
        return r < 0 ? fail(owned, n_owned, &b) : fallback(owned, n_owned, &b);
    PyObject *payload = PyBytes_FromStringAndSize((const char *)b.p, (Py_ssize_t)b.len);
    PyMem_Free(b.p);
    if (!payload) {
        for (int i = 0; i < n_owned; i++) Py_XDECREF(owned[i]);
        return NULL;
    }
    return Py_BuildValue("(NNNNN)", keys, cnts, ts, cols, payload);
}

/* ------------------------------------------------------------------ memtable insert */
/* MemTable._add_small's loop (seqvault/memtable.py), for one call's users: about 1 us of
 * Python per user there, which made the memtable the largest cost of a 100-user append. */

static PyObject *frombytes_name; /* interned "frombytes" */

/* Append `items` zero int64s to an array('q'). `zeros` is a bytes of exactly 8 * items. */
static int grow(PyObject *arr, Py_ssize_t items, PyObject *zeros) {
    if (items == 0) return 0;
    PyObject *r = PyObject_CallMethodOneArg(arr, frombytes_name, zeros);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *zero_bytes(Py_ssize_t items) {
    PyObject *z = PyBytes_FromStringAndSize(NULL, items * 8);
    if (z) memset(PyBytes_AS_STRING(z), 0, (size_t)items * 8);
    return z;
}

static int64_t *q_buffer(PyObject *arr, Py_buffer *view) {
    if (PyObject_GetBuffer(arr, view, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) return NULL;
    if (view->itemsize != 8 || !view->format || strcmp(view->format, "q") != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "expected array('q') arguments");
        return NULL;
    }
    return (int64_t *)view->buf;
}

/* The buffers of `n` array('q') arguments; on failure none is held and -1 is returned. */
static int q_buffers(PyObject **arrs, int n, Py_buffer *views, int64_t **q) {
    for (int got = 0; got < n; got++) {
        if (!(q[got] = q_buffer(arrs[got], &views[got]))) {
            for (int a = 0; a < got; a++) PyBuffer_Release(&views[a]);
            return -1;
        }
    }
    return 0;
}

static PyObject *ts_name, *cols_name, *refs_name, *count_name, *fill_name, *ends_name;

/* Copy the call's rows (ts, cols) into `block` at row `fill` (MemTable._copy_in): a memcpy per
 * column when the dtypes match and the arrays are contiguous, numpy's assignment (which casts)
 * otherwise; `ends` gets the record's end for every row. Nothing is copied when the block is
 * the call's own arrays (a large call: `ts` is block.ts). 0, or -1 with an error set. */
static int copy_in(PyObject *block, PyObject *ts, PyObject *cols, Py_ssize_t fill, Py_ssize_t n,
                   long long end) {
    PyObject *bts = PyObject_GetAttr(block, ts_name);
    PyObject *bcols = bts ? PyObject_GetAttr(block, cols_name) : NULL;
    PyObject *bends = bcols ? PyObject_GetAttr(block, ends_name) : NULL;
    int rc = -1;
    if (!bends) goto done;
    if (bts == ts) { rc = 0; goto done; } /* the call's own block: already in place */
    if (!PyArray_CheckExact(bts) || !PyArray_CheckExact(bends) || !PyDict_Check(bcols) ||
        !PyDict_Check(cols) || PyArray_NDIM((PyArrayObject *)bts) != 1 ||
        PyArray_DIM((PyArrayObject *)bts, 0) < fill + n ||
        PyArray_DIM((PyArrayObject *)bends, 0) < fill + n ||
        PyArray_TYPE((PyArrayObject *)bends) != NPY_INT64 ||
        !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)bends)) {
        PyErr_SetString(PyExc_ValueError, "add_call: the block has no room for the call's rows");
        goto done;
    }
    Py_ssize_t pos = 0;
    PyObject *name, *dst, *src;
    for (int c = 0;; c++) {
        if (c == 0) {
            dst = bts;
            src = ts;
        } else {
            if (!PyDict_Next(bcols, &pos, &name, &dst)) break;
            src = PyDict_GetItemWithError(cols, name);
            if (!src) {
                if (!PyErr_Occurred())
                    PyErr_Format(PyExc_KeyError, "add_call: the call has no column %R", name);
                goto done;
            }
        }
        PyArrayObject *d = (PyArrayObject *)dst, *s = (PyArrayObject *)src;
        if (!PyArray_CheckExact(dst) || PyArray_NDIM(d) != 1 || PyArray_DIM(d, 0) < fill + n) {
            PyErr_SetString(PyExc_ValueError, "add_call: a block column has no room");
            goto done;
        }
        if (PyArray_CheckExact(src) && PyArray_NDIM(s) == 1 && PyArray_DIM(s, 0) == n &&
            PyArray_TYPE(s) == PyArray_TYPE(d) && PyArray_IS_C_CONTIGUOUS(s) &&
            PyArray_IS_C_CONTIGUOUS(d)) {
            npy_intp item = PyArray_ITEMSIZE(d);
            memcpy((char *)PyArray_DATA(d) + fill * item, PyArray_DATA(s), (size_t)(n * item));
        } else if (PySequence_SetSlice(dst, fill, fill + n, src) < 0) {
            goto done;
        }
    }
    int64_t *e = (int64_t *)PyArray_DATA((PyArrayObject *)bends) + fill;
    for (Py_ssize_t i = 0; i < n; i++) e[i] = end;
    rc = 0;
done:
    Py_XDECREF(bts);
    Py_XDECREF(bcols);
    Py_XDECREF(bends);
    return rc;
}

/* Extend the built tail of user `uid` by its slice [start, stop) of `block`:
 * `tail.refs.append((block, start, stop)); tail.count = count[uid]`. */
static int extend_tail(PyObject *tail, PyObject *block, int64_t start, int64_t stop,
                       int64_t count) {
    PyObject *refs = PyObject_GetAttr(tail, refs_name);
    if (!refs) return -1;
    PyObject *ref = Py_BuildValue("(OLL)", block, (long long)start, (long long)stop);
    PyObject *c = ref ? PyLong_FromLongLong(count) : NULL;
    int bad = !c || PyList_Append(refs, ref) < 0 || PyObject_SetAttr(tail, count_name, c) < 0;
    Py_XDECREF(c);
    Py_XDECREF(ref);
    Py_DECREF(refs);
    return bad ? -1 : 0;
}

PyDoc_STRVAR(add_call_doc,
"add_call(parts, block, keys, counts, ts, cols, end, seal_at)\n--\n\n"
"Add one append call to the memtable (MemTable._add_small's reference loop, for any number of\n"
"users): its rows (grouped by user, counts[i] rows for keys[i]) copied into `block` (the last\n"
"of `blocks`) at its `fill`, which grows by the call's rows; an entry per user (block, rows,\n"
"previous entry, the record's end `end`, the user) chained from the user's last; new users\n"
"given the next dense ids; and the built tails of the call's users extended by their slices.\n"
"`parts` is MemTable._parts: (users, key_list, count, last, e_block, e_start, e_stop, e_prev,\n"
"e_end, e_uid, blocks, tails, sizes), sizes[0] the entries in use (the arrays have room past\n"
"it, and past len(key_list) users; they grow by an eighth at least when short). Returns (full, top, tail_rows, tail_refs): the keys whose tail\n"
"reached seal_at (none when 0), the largest tail among the call's users, and the rows and\n"
"slices the built tails grew by.");

#define N_ENTRY_ARRS 8 /* count, last, e_block, e_start, e_stop, e_prev, e_end, e_uid */

/* One C call per append, with no object per call: the rows go into a block many calls share
 * (docs/design/realtime.md, "Many calls' rows in one block"). */
static PyObject *add_call_impl(PyObject *parts, PyObject *block, PyObject *keys,
                               PyObject *counts, PyObject *ts, PyObject *cols, long long end,
                               long long seal_at);

static PyObject *add_call(PyObject *self, PyObject *args) {
    PyObject *parts, *block, *keys, *counts, *ts, *cols;
    long long end, seal_at;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!OO!O!OO!LL", &PyTuple_Type, &parts, &block, &PyList_Type,
                          &keys, &PyList_Type, &counts, &ts, &PyDict_Type, &cols, &end,
                          &seal_at))
        return NULL;
    return add_call_impl(parts, block, keys, counts, ts, cols, end, seal_at);
}

/* The memtable's parts an add needs (MemTable._parts), checked. 0, or -1 with an error set. */
typedef struct {
    PyObject *users, *key_list, *blocks, *tails, *sizes, *arrs[N_ENTRY_ARRS];
    Py_ssize_t n_blocks;
} parts_t;

static int open_parts(parts_t *p, PyObject *parts, PyObject *block) {
    if (!PyTuple_Check(parts) || PyTuple_GET_SIZE(parts) != 13) {
        PyErr_SetString(PyExc_TypeError, "add_call: parts must be a 13-tuple");
        return -1;
    }
    p->sizes = PyTuple_GET_ITEM(parts, 12);
    p->users = PyTuple_GET_ITEM(parts, 0);
    p->key_list = PyTuple_GET_ITEM(parts, 1);
    for (int a = 0; a < N_ENTRY_ARRS; a++) p->arrs[a] = PyTuple_GET_ITEM(parts, 2 + a);
    p->blocks = PyTuple_GET_ITEM(parts, 10);
    p->tails = PyTuple_GET_ITEM(parts, 11);
    if (!PyDict_Check(p->users) || !PyList_Check(p->key_list) || !PyList_Check(p->blocks) ||
        !PyDict_Check(p->tails)) {
        PyErr_SetString(PyExc_TypeError, "add_call: arguments of the wrong types");
        return -1;
    }
    p->n_blocks = PyList_GET_SIZE(p->blocks);
    if (p->n_blocks == 0 || PyList_GET_ITEM(p->blocks, p->n_blocks - 1) != block) {
        PyErr_SetString(PyExc_ValueError, "add_call: the block must be the last of blocks");
        return -1;
    }
    return 0;
}

/* After the call's n rows are in `block` from row `fill`: its new fill, an entry per user
 * (keyv[i] with cnt[i] rows, in order) chained from the user's last, new users given the next
 * dense ids, and the built tails extended. (full, top, tail_rows, tail_refs), or NULL. */
static PyObject *add_entries(const parts_t *p, PyObject *block, PyObject *const *keyv,
                             const int64_t *cnt, Py_ssize_t k, Py_ssize_t fill, Py_ssize_t n,
                             long long end, long long seal_at) {
    PyObject *zeros = NULL, *full = NULL, *out = NULL;
    int64_t ubuf[64], *u = k <= 64 ? ubuf : PyMem_Malloc((size_t)k * sizeof(int64_t));
    if (!u) return PyErr_NoMemory();
    /* the users: new keys get the next dense ids */
    Py_ssize_t base = PyList_GET_SIZE(p->key_list), added = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *key = keyv[i];
        PyObject *uid = PyDict_GetItemWithError(p->users, key);
        if (uid) {
            u[i] = PyLong_AsLongLong(uid);
            if (u[i] == -1 && PyErr_Occurred()) goto error;
            continue;
        }
        if (PyErr_Occurred()) goto error;
        u[i] = base + added++;
        uid = PyLong_FromLongLong(u[i]);
        if (!uid) goto error;
        int bad = PyDict_SetItem(p->users, key, uid) < 0 || PyList_Append(p->key_list, key) < 0;
        Py_DECREF(uid);
        if (bad) goto error;
    }
    PyObject *const *arrs = p->arrs;
    /* entries in use: `sizes[0]`; the arrays have room past it (MemTable._room) */
    Py_buffer sview;
    int64_t *sizes = q_buffer(p->sizes, &sview);
    if (!sizes) goto error;
    Py_ssize_t e0 = sizes[0];
    PyBuffer_Release(&sview);
    Py_ssize_t have_u = PyObject_Length(arrs[0]), have_e = PyObject_Length(arrs[2]);
    if (e0 < 0 || have_u < 0 || have_e < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "add_call: bad sizes");
        goto error;
    }
    if (have_u < base + added) { /* by an eighth at least: a grow is rare */
        Py_ssize_t more = base + added - have_u;
        if (more < have_u / 8) more = have_u / 8;
        if (more < 256) more = 256;
        if (!(zeros = zero_bytes(more)) || grow(arrs[0], more, zeros) < 0 ||
            grow(arrs[1], more, zeros) < 0)
            goto error;
        Py_CLEAR(zeros);
    }
    if (have_e < e0 + k) {
        Py_ssize_t more = e0 + k - have_e;
        if (more < have_e / 8) more = have_e / 8;
        if (more < 256) more = 256;
        if (!(zeros = zero_bytes(more))) goto error;
        for (int a = 2; a < N_ENTRY_ARRS; a++)
            if (grow(arrs[a], more, zeros) < 0) goto error;
        Py_CLEAR(zeros);
    }
    /* the block's new fill, before anything can fail half-way below */
    PyObject *new_fill = PyLong_FromSsize_t(fill + n);
    if (!new_fill) goto error;
    int bad_fill = PyObject_SetAttr(block, fill_name, new_fill);
    Py_DECREF(new_fill);
    if (bad_fill < 0) goto error;

    Py_buffer views[N_ENTRY_ARRS];
    int64_t *q[N_ENTRY_ARRS];
    if (q_buffers((PyObject **)arrs, N_ENTRY_ARRS, views, q) < 0) goto error;
    Py_ssize_t n_users = views[0].len / 8;
    for (Py_ssize_t i = base; i < base + added && i < n_users; i++) {
        q[0][i] = 0;
        q[1][i] = -1;
    }
    int64_t top = 0, start = fill, t_rows = 0, t_refs = 0;
    int ok = (full = PyList_New(0)) != NULL;
    int check_tails = PyDict_GET_SIZE(p->tails) > 0;
    for (Py_ssize_t i = 0; i < k && ok; i++) {
        int64_t uid = u[i], c_n = cnt[i];
        if (uid < 0 || uid >= n_users) {
            PyErr_SetString(PyExc_IndexError, "add_call: user id out of range");
            ok = 0;
            break;
        }
        int64_t e = e0 + i;
        q[2][e] = p->n_blocks - 1;
        q[3][e] = start;
        q[4][e] = start + c_n;
        q[5][e] = q[1][uid];
        q[6][e] = end;
        q[7][e] = uid;
        q[1][uid] = e;
        int64_t c = q[0][uid] += c_n;
        if (c > top) top = c;
        if (seal_at && c >= seal_at && PyList_Append(full, keyv[i]) < 0) ok = 0;
        if (ok && check_tails) {
            PyObject *ukey = PyLong_FromLongLong(uid);
            PyObject *tail = ukey ? PyDict_GetItemWithError(p->tails, ukey) : NULL;
            Py_XDECREF(ukey);
            if (tail) {
                if (extend_tail(tail, block, start, start + c_n, c) < 0) ok = 0;
                t_rows += c_n;
                t_refs += 1;
            } else if (PyErr_Occurred()) {
                ok = 0;
            }
        }
        start += c_n;
    }
    for (int a = 0; a < N_ENTRY_ARRS; a++) PyBuffer_Release(&views[a]);
    if (!ok) goto error;
    if (!(sizes = q_buffer(p->sizes, &sview))) goto error;
    sizes[0] = e0 + k;
    PyBuffer_Release(&sview);
    out = Py_BuildValue("(OLLL)", full, (long long)top, (long long)t_rows, (long long)t_refs);
error:
    Py_XDECREF(zeros);
    Py_XDECREF(full);
    if (u != ubuf) PyMem_Free(u);
    return out;
}

/* add_call's work; keys and counts lists, cols a dict (checked by the callers). */
static PyObject *add_call_impl(PyObject *parts, PyObject *block, PyObject *keys,
                               PyObject *counts, PyObject *ts, PyObject *cols, long long end,
                               long long seal_at) {
    parts_t p;
    if (open_parts(&p, parts, block) < 0) return NULL;
    if (!PyArray_Check(ts) || PyArray_NDIM((PyArrayObject *)ts) != 1) {
        PyErr_SetString(PyExc_TypeError, "add_call: arguments of the wrong types");
        return NULL;
    }
    Py_ssize_t k = PyList_GET_SIZE(keys), n = PyArray_DIM((PyArrayObject *)ts, 0);
    if (PyList_GET_SIZE(counts) != k) {
        PyErr_SetString(PyExc_ValueError, "add_call: keys and counts differ in length");
        return NULL;
    }
    PyObject *out = NULL;
    int64_t *cnt = PyMem_Malloc((size_t)(k ? k : 1) * sizeof(int64_t));
    if (!cnt) return PyErr_NoMemory();
    /* the counts first: they must tile the call's rows */
    int64_t rows = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        cnt[i] = PyLong_AsLongLong(PyList_GET_ITEM(counts, i));
        if (cnt[i] == -1 && PyErr_Occurred()) goto error;
        if (cnt[i] < 0) {
            PyErr_SetString(PyExc_ValueError, "add_call: a negative count");
            goto error;
        }
        rows += cnt[i];
    }
    if (rows != n) {
        PyErr_SetString(PyExc_ValueError, "add_call: counts do not sum to the call's rows");
        goto error;
    }
    PyObject *fill_obj = PyObject_GetAttr(block, fill_name);
    if (!fill_obj) goto error;
    Py_ssize_t fill = PyLong_AsSsize_t(fill_obj);
    Py_DECREF(fill_obj);
    if (fill < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "add_call: negative fill");
        goto error;
    }
    if (copy_in(block, ts, cols, fill, n, end) < 0) goto error;
    out = add_entries(&p, block, PySequence_Fast_ITEMS(keys), cnt, k, fill, n, end, seal_at);
error:
    PyMem_Free(cnt);
    return out;
}

/* ------------------------------------------------------------------ the whole append */
/* One append call in one C call: `prepare`, the log record, its pwrite and `add_call`. The
 * steps are the ones the Python path calls one by one (Vault._append_grouped); here the Python
 * between them (five frames, the record's bytes, attribute lookups) goes, ~2-3 us of the
 * ~7 us a one-event append took (docs/design/realtime.md, "One C call for an append"). */

PyDoc_STRVAR(append_call_doc,
"append_call(spec, key, users, columns, min_ts, parts, block, seal_at, dicts, max_strings, log)\n"
"--\n\n"
"prepare(spec, key, users, columns, min_ts)'s checks, then the call's log record\n"
"(docs/format/wal.md, \"Record\", type 1) written at the log's end, then add_call(parts, block,\n"
"...)'s insert with the record's end, the rows copied into the block straight from the\n"
"caller's columns. String columns are coded with their StringDict in `dicts` (name ->\n"
"StringDict: `codes`, `values`), its new strings added once the record is written.\n"
"log: (fd, end, seq, events_before, room_end, ring, ring_size, ring_room) of WalWriter:\n"
"ring the mapping of the log's staging ring (the record is stored there, header first, if it\n"
"is at most RING_RECORD_MAX bytes and ends by ring_room, else declined) or None (pwrite).\n"
"Returns None, having done\n"
"nothing, when the call is not a plain case, a string column could reach max_strings, the\n"
"record would pass room_end or the block has no room (the Python path then runs); raises\n"
"OSError, having added nothing, when the write fails; else (end, events, full, top,\n"
"tail_rows, tail_refs), end the offset after the record, or (end, events, exception) when\n"
"the record was written but adding the rows to the memtable failed.");

#define REC_HEAD 29
#define REC_APPEND 1
/* the staging ring (seqvault/ring.py, docs/format/ring.md): its header's size, and the
 * largest record staged in it (ring.HEADER_SIZE, ring.RECORD_MAX: exported as RING_HEADER and
 * RING_RECORD_MAX, and a test holds them equal) */
#define RING_HEADER 4096
#define RING_RECORD_MAX 65536

/* n bytes of log offset `at` into the ring's body of `size` bytes, wrapping at its end */
static void ring_put(uint8_t *body, long long size, long long at, const uint8_t *src,
                     Py_ssize_t n) {
    long long pos = at % size;
    Py_ssize_t first = n < size - pos ? n : (Py_ssize_t)(size - pos);
    memcpy(body + pos, src, (size_t)first);
    if (first < n) memcpy(body, src + first, (size_t)(n - first));
}

static void put_le(uint8_t *o, uint64_t v, int n) {
    for (int i = 0; i < n; i++) o[i] = (uint8_t)(v >> (8 * i));
}

/* The block's destination for the call's rows, past its fill: the arrays of each column, of
 * the spec's dtypes (or an equivalent type number: uint64 may be numpy's ulong or ulonglong,
 * depending on how the block's first call built it), contiguous, with room. 1: found; 0: not (the Python path picks a block);
 * -1: error set. */
typedef struct {
    Py_ssize_t fill;
    int64_t *ts, *ends;
    void *data[MAX_COLS];
} dest_t;

static int open_dest(dest_t *d, PyObject *block, const call_t *c) {
    PyObject *fill_obj = PyObject_GetAttr(block, fill_name);
    PyObject *bts = fill_obj ? PyObject_GetAttr(block, ts_name) : NULL;
    PyObject *bcols = bts ? PyObject_GetAttr(block, cols_name) : NULL;
    PyObject *bends = bcols ? PyObject_GetAttr(block, ends_name) : NULL;
    int rc = -1;
    if (!bends) goto done;
    d->fill = PyLong_AsSsize_t(fill_obj);
    if (d->fill == -1 && PyErr_Occurred()) goto done;
    rc = 0;
    Py_ssize_t need = d->fill + c->n;
    PyObject *arrs[2] = {bts, bends};
    for (int i = 0; i < 2; i++) {
        PyArrayObject *a = (PyArrayObject *)arrs[i];
        if (!PyArray_CheckExact(arrs[i]) || PyArray_NDIM(a) != 1 || PyArray_DIM(a, 0) < need ||
            !PyArray_EquivTypenums(PyArray_TYPE(a), NPY_INT64) || !PyArray_IS_C_CONTIGUOUS(a) ||
            !PyArray_ISWRITEABLE(a))
            goto done;
    }
    if (d->fill < 0 || !PyDict_CheckExact(bcols) || PyDict_GET_SIZE(bcols) != c->ncols) goto done;
    d->ts = (int64_t *)PyArray_DATA((PyArrayObject *)bts) + d->fill;
    d->ends = (int64_t *)PyArray_DATA((PyArrayObject *)bends) + d->fill;
    for (Py_ssize_t i = 0; i < c->ncols; i++) {
        PyObject *name = PyTuple_GET_ITEM(PyTuple_GET_ITEM(c->cols_spec, i), 0);
        PyObject *v = PyDict_GetItemWithError(bcols, name);
        if (!v) {
            rc = PyErr_Occurred() ? -1 : 0;
            goto done;
        }
        PyArrayObject *a = (PyArrayObject *)v;
        if (!PyArray_CheckExact(v) || PyArray_NDIM(a) != 1 || PyArray_DIM(a, 0) < need ||
            !PyArray_EquivTypenums(PyArray_TYPE(a), c->srcs[i].typenum == NPY_OBJECT
                                                        ? NPY_UINT32 : c->srcs[i].typenum) ||
            !PyArray_IS_C_CONTIGUOUS(a) ||
            !PyArray_ISWRITEABLE(a))
            goto done;
        d->data[i] = (char *)PyArray_DATA(a) + d->fill * PyArray_ITEMSIZE(a);
    }
    rc = 1;
done:
    Py_XDECREF(fill_obj);
    Py_XDECREF(bts);
    Py_XDECREF(bcols);
    Py_XDECREF(bends);
    return rc;
}

/* A string column's rows as dictionary codes (StringDict.encode, seqvault/memtable.py): each
 * row's str, in group order, into objs (for the payload) and its code into out, a string not
 * in `codes` taking the next code after those of `values` and of the call's earlier new
 * strings (`*pending`, made on first need: str -> code, in order of first sight, as encode
 * assigns them). Nothing is added to the dictionary here: the caller adds `pending` once the
 * record is written. As list_value: 1, 0 (a value that is not an exact str), -1. */
static int code_strings(const call_t *c, Py_ssize_t i, PyObject *codes, Py_ssize_t n_values,
                        PyObject **objs, uint32_t *out, PyObject **pending) {
    const src_t *s = &c->srcs[i];
    for (Py_ssize_t j = 0; j < c->n; j++) {
        Py_ssize_t k = c->order[j];
        PyObject *x = s->list ? PyList_GET_ITEM(s->list, k)
                              : *(PyObject **)(s->data + k * s->stride);
        if (!x || !PyUnicode_CheckExact(x)) return 0;
        objs[j] = x;
        PyObject *code = PyDict_GetItemWithError(codes, x);
        if (!code && PyErr_Occurred()) return -1;
        if (!code && *pending) {
            code = PyDict_GetItemWithError(*pending, x);
            if (!code && PyErr_Occurred()) return -1;
        }
        if (code) {
            long v = PyLong_AsLong(code);
            if (v == -1 && PyErr_Occurred()) return -1;
            out[j] = (uint32_t)v;
            continue;
        }
        if (!*pending && !(*pending = PyDict_New())) return -1;
        Py_ssize_t next = n_values + PyDict_GET_SIZE(*pending);
        PyObject *v = PyLong_FromSsize_t(next);
        if (!v) return -1;
        int bad = PyDict_SetItem(*pending, x, v);
        Py_DECREF(v);
        if (bad < 0) return -1;
        out[j] = (uint32_t)next;
    }
    return 1;
}

static PyObject *codes_name, *values_name;

static PyObject *append_call(PyObject *self, PyObject *args) {
    PyObject *spec, *key, *users, *columns, *parts, *block, *dicts, *ring;
    long long min_ts, seal_at, max_strings, end, seq, before, room, ring_size, ring_room;
    int fd;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!OOO!LO!OLOL(iLLLLOLL)", &PyTuple_Type, &spec, &key, &users,
                          &PyDict_Type, &columns, &min_ts, &PyTuple_Type, &parts, &block,
                          &seal_at, &dicts, &max_strings, &fd, &end, &seq, &before, &room,
                          &ring, &ring_size, &ring_room))
        return NULL;
    if (block == Py_None || end < 0 || seq < 0 || before < 0) Py_RETURN_NONE;
    call_t c;
    int r = open_call(&c, spec, users, columns);
    if (r <= 0) return r < 0 ? NULL : (Py_INCREF(Py_None), Py_None);
    parts_t p;
    if (open_parts(&p, parts, block) < 0) return NULL;
    dest_t d;
    d.fill = 0; /* set by open_dest; said here for the compiler's flow analysis */
    d.ts = d.ends = NULL;
    if ((r = open_dest(&d, block, &c)) <= 0) return r < 0 ? NULL : (Py_INCREF(Py_None), Py_None);
    Py_ssize_t n = c.n, k = 0, n_str = 0;
    PyObject *out = NULL, *keyobjs[MAX_ROWS];
    /* string columns: their dictionary (codes, values), the call's new strings (pending),
     * and the rows' str objects in group order (what the payload writes) */
    PyObject *sd_codes[MAX_COLS], *sd_values[MAX_COLS], *pending[MAX_COLS];
    PyObject **objs = NULL;
    void *data[MAX_COLS];
    buf_t b = {NULL, 0, 0};
    for (Py_ssize_t i = 0; i < c.ncols; i++) n_str += c.srcs[i].typenum == NPY_OBJECT;
    Py_ssize_t held = 0; /* string columns whose refs below are held */
    if (n_str && !(objs = PyMem_Malloc((size_t)(n * n_str) * sizeof(PyObject *)))) {
        PyErr_NoMemory();
        goto done;
    }
    /* The rows go straight into the block past its fill: no reader looks there before the
     * fill grows below, and a call found not plain here leaves rows the next call overwrites. */
    if ((r = fill_ts(&c, d.ts, min_ts)) <= 0) goto declined;
    for (Py_ssize_t i = 0, si = 0; i < c.ncols; i++) {
        data[i] = d.data[i];
        if (c.srcs[i].typenum != NPY_OBJECT) {
            if ((r = fill_col(&c, i, d.data[i])) <= 0) goto declined;
            continue;
        }
        PyObject *name = PyTuple_GET_ITEM(PyTuple_GET_ITEM(c.cols_spec, i), 0);
        PyObject *sd = PyDict_Check(dicts) ? PyDict_GetItemWithError(dicts, name) : NULL;
        if (!sd) {
            r = PyErr_Occurred() ? -1 : 0;
            goto declined;
        }
        sd_codes[si] = PyObject_GetAttr(sd, codes_name);
        sd_values[si] = sd_codes[si] ? PyObject_GetAttr(sd, values_name) : NULL;
        pending[si] = NULL;
        held = ++si;
        if (!sd_values[si - 1]) goto done;
        if (!PyDict_CheckExact(sd_codes[si - 1]) || !PyList_CheckExact(sd_values[si - 1]) ||
            PyList_GET_SIZE(sd_values[si - 1]) + n > max_strings) {
            r = 0; /* near the cardinality limit: StringDict.check_room decides */
            goto declined;
        }
        PyObject **o = objs + (si - 1) * n;
        r = code_strings(&c, i, sd_codes[si - 1], PyList_GET_SIZE(sd_values[si - 1]), o,
                         (uint32_t *)d.data[i], &pending[si - 1]);
        if (r <= 0) goto declined;
        data[i] = o;
    }
    /* the record: its header, then the payload written after it in the same buffer */
    if (reserve(&b, REC_HEAD) < 0) goto done;
    b.len = REC_HEAD;
    if ((r = write_payload(&b, &c, key, d.ts, data)) <= 0) goto declined;
    Py_ssize_t len = (Py_ssize_t)b.len, plen = len - REC_HEAD;
    if (plen > 0xFFFFFFFFLL || end + len > room) { /* the log grows first: Python's path */
        r = 0;
        goto declined;
    }
    /* staged in the ring only within RING_RECORD_MAX and without passing the bytes not yet
     * copied out (rule G2); else Python's path copies them out and writes this one itself */
    if (ring != Py_None && (len > RING_RECORD_MAX || end + len > ring_room || ring_size <= 0)) {
        r = 0;
        goto declined;
    }
    uint8_t *rec = b.p;
    put_le(rec + 4, (uint64_t)plen, 4);
    rec[8] = REC_APPEND;
    put_le(rec + 9, (uint64_t)seq, 8);
    put_le(rec + 17, (uint64_t)before, 8);
    put_le(rec + 25, (uint64_t)n, 4);
    put_le(rec, crc32_z(0L, rec + 4, (size_t)(len - 4)), 4);
    if (ring != Py_None) {
        /* staged in the ring (seqvault/ring.py): stores into a shared mapping, no system call */
        Py_buffer view;
        if (PyObject_GetBuffer(ring, &view, PyBUF_WRITABLE) < 0) goto done;
        if (view.len != RING_HEADER + ring_size) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_ValueError, "the ring's mapping is not of its size");
            goto done;
        }
        uint8_t *body = (uint8_t *)view.buf + RING_HEADER;
        ring_put(body, ring_size, end, rec, REC_HEAD);
        /* the header's bytes before any of the payload's (rule G1): what a crash leaves is a
         * header cut short or a whole header and part of its payload, never the reverse */
        __atomic_thread_fence(__ATOMIC_RELEASE);
        ring_put(body, ring_size, end + REC_HEAD, rec + REC_HEAD, plen);
        PyBuffer_Release(&view);
    } else {
        ssize_t w;
        int err;
        /* the GIL goes for the system call, as os.pwrite's does: a write can stall on
         * writeback */
        Py_BEGIN_ALLOW_THREADS
        do {
            w = pwrite(fd, rec, (size_t)len, (off_t)end);
        } while (w < 0 && errno == EINTR);
        err = errno;
        Py_END_ALLOW_THREADS
        if (w < 0) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
        if (w != len) {
            PyErr_Format(PyExc_OSError, "short write to the log: %zd of %zd bytes", w, len);
            goto done;
        }
    }
    long long new_end = end + len;
    for (Py_ssize_t i = 0; i < n; i++) d.ends[i] = new_end;
    /* the record is written: the call's new strings join their dictionaries, in log order */
    int ok = 1;
    for (Py_ssize_t si = 0; si < held && ok; si++) {
        if (!pending[si]) continue;
        Py_ssize_t pos = 0;
        PyObject *s, *code;
        while (ok && PyDict_Next(pending[si], &pos, &s, &code))
            ok = PyList_Append(sd_values[si], s) == 0 &&
                 PyDict_SetItem(sd_codes[si], s, code) == 0;
    }
    /* the call's users as the keys the memtable's dict holds */
    int64_t cnt[MAX_ROWS];
    PyObject *added = NULL;
    if (ok) {
        if (!c.batch) {
            keyobjs[k] = key;
            Py_INCREF(key);
            cnt[k++] = n;
        } else {
            for (; k < c.nk; k++) {
                if (!(keyobjs[k] = PyLong_FromLongLong(c.ukeys[k]))) break;
                cnt[k] = c.counts[k];
            }
        }
        if (k == (c.batch ? c.nk : 1))
            added = add_entries(&p, block, keyobjs, cnt, k, d.fill, n, new_end, seal_at);
    }
    if (!added) { /* the record is in the log: the caller must know it */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb && value) PyException_SetTraceback(value, tb);
        out = Py_BuildValue("(LnO)", new_end, n, value ? value : Py_None);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        goto done;
    }
    out = Py_BuildValue("(LnOOOO)", new_end, n, PyTuple_GET_ITEM(added, 0),
                        PyTuple_GET_ITEM(added, 1), PyTuple_GET_ITEM(added, 2),
                        PyTuple_GET_ITEM(added, 3));
    Py_DECREF(added);
    goto done;
declined: /* r: 0, nothing written (Python's path runs), or -1 with an error set */
    if (r == 0) {
        out = Py_None;
        Py_INCREF(out);
    }
done:
    for (Py_ssize_t i = 0; i < k; i++) Py_DECREF(keyobjs[i]);
    for (Py_ssize_t si = 0; si < held; si++) {
        Py_XDECREF(sd_codes[si]);
        Py_XDECREF(sd_values[si]);
        Py_XDECREF(pending[si]);
    }
    PyMem_Free(objs);
    PyMem_Free(b.p);
    return out;
}

/* ------------------------------------------------------------------ a tail's arrays */
/* UserTail.arrays (seqvault/memtable.py) for a tail of many slices: a hot user's tail is one
 * slice per append call, so sealing 2,048 events gathered 2,048 numpy slices per column
 * (~2 ms per seal in Python, the largest CPU cost of 100-event appends after the kernel). */


PyDoc_STRVAR(gather_doc,
"gather(refs, names)\n--\n\n"
"(ts, {name: array}): the (chunk, start, stop) slices of `refs` concatenated, or None when\n"
"an array is not a 1-D contiguous array of the first slice's dtype (Python then gathers).");

/* The arrays of one chunk (block) a gather copies from: fetched once per run of slices from the
 * same block (a hot user's slices sit in a few blocks, so this saves two attribute lookups and
 * a dict lookup per column per slice). Borrowed pointers: the block holds them, and nothing
 * runs Python code while a gather copies. */
typedef struct {
    PyObject *chunk;
    PyArrayObject *arr[MAX_COLS + 1];
} slice_src;

/* 1: loaded; 0: a column that is not a numpy array (the caller falls back); -1: an error. */
static int load_src(PyObject *chunk, PyObject *names, Py_ssize_t nc, slice_src *src) {
    src->chunk = NULL;
    PyObject *ts = PyObject_GetAttr(chunk, ts_name);
    PyObject *cd = ts ? PyObject_GetAttr(chunk, cols_name) : NULL;
    int ok = cd && PyDict_Check(cd) ? 1 : (PyErr_Occurred() ? -1 : 0);
    for (Py_ssize_t c = 0; ok > 0 && c <= nc; c++) {
        PyObject *arr = c == 0 ? ts : PyDict_GetItemWithError(cd, PyTuple_GET_ITEM(names, c - 1));
        if (!arr || !PyArray_CheckExact(arr)) {
            ok = PyErr_Occurred() ? -1 : 0;
            break;
        }
        src->arr[c] = (PyArrayObject *)arr;
    }
    Py_XDECREF(ts);
    Py_XDECREF(cd);
    if (ok > 0) src->chunk = chunk;
    return ok;
}

/* Copy rows [a, b) of one chunk's arrays (ts, then `names` of chunk.cols) to position `pos` of
 * `out`, allocating `out` (of `total` rows) at the first slice. 1: copied; 0: an array that is
 * not 1-D contiguous of the first slice's dtype (the caller falls back); -1: an error. */
static int copy_slice(slice_src *src, PyObject *chunk, Py_ssize_t a, Py_ssize_t b,
                      PyObject *names, Py_ssize_t nc, PyObject **out, int *types, npy_intp total,
                      npy_intp pos) {
    if (src->chunk != chunk) {
        int got = load_src(chunk, names, nc, src);
        if (got <= 0) return got;
    }
    for (Py_ssize_t c = 0; c <= nc; c++) {
        PyArrayObject *x = src->arr[c];
        if (PyArray_NDIM(x) != 1 || !PyArray_IS_C_CONTIGUOUS(x) || PyArray_DIM(x, 0) < b)
            return 0;
        if (out[c] == NULL) {
            types[c] = PyArray_TYPE(x);
            npy_intp dims[1] = {total};
            out[c] = PyArray_SimpleNew(1, dims, types[c]);
            if (!out[c]) return -1;
        } else if (PyArray_TYPE(x) != types[c]) {
            return 0;
        }
        npy_intp item = PyArray_ITEMSIZE(x);
        memcpy((char *)PyArray_DATA((PyArrayObject *)out[c]) + pos * item,
               (char *)PyArray_DATA(x) + a * item, (size_t)((b - a) * item));
    }
    return 1;
}

/* (ts, {name: values}) from the gathered arrays; steals nothing, releases `out`. */
static PyObject *gathered(PyObject **out, PyObject *names, Py_ssize_t nc) {
    PyObject *result = NULL, *cols = PyDict_New();
    if (!cols) goto done;
    for (Py_ssize_t c = 1; c <= nc; c++)
        if (PyDict_SetItem(cols, PyTuple_GET_ITEM(names, c - 1), out[c]) < 0) goto done;
    result = PyTuple_Pack(2, out[0], cols);
done:
    Py_XDECREF(cols);
    for (Py_ssize_t c = 0; c <= nc; c++) Py_XDECREF(out[c]);
    return result;
}

static PyObject *gather_refs(PyObject *self, PyObject *args) {
    PyObject *refs, *names;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &refs, &PyTuple_Type, &names))
        return NULL;
    Py_ssize_t nr = PyList_GET_SIZE(refs), nc = PyTuple_GET_SIZE(names);
    if (nr == 0 || nc > MAX_COLS) Py_RETURN_NONE;
    /* pass 1: the total */
    npy_intp total = 0;
    int types[MAX_COLS + 1];
    for (Py_ssize_t r = 0; r < nr; r++) {
        PyObject *ref = PyList_GET_ITEM(refs, r);
        if (!PyTuple_CheckExact(ref) || PyTuple_GET_SIZE(ref) != 3) Py_RETURN_NONE;
        Py_ssize_t a = PyLong_AsSsize_t(PyTuple_GET_ITEM(ref, 1));
        Py_ssize_t b = PyLong_AsSsize_t(PyTuple_GET_ITEM(ref, 2));
        if ((a == -1 || b == -1) && PyErr_Occurred()) return NULL;
        if (a < 0 || b < a) Py_RETURN_NONE;
        total += b - a;
    }
    PyObject *out[MAX_COLS + 1] = {NULL};
    slice_src src = {NULL, {NULL}};
    npy_intp pos = 0;
    for (Py_ssize_t r = 0; r < nr; r++) {
        PyObject *ref = PyList_GET_ITEM(refs, r);
        Py_ssize_t a = PyLong_AsSsize_t(PyTuple_GET_ITEM(ref, 1));
        Py_ssize_t b = PyLong_AsSsize_t(PyTuple_GET_ITEM(ref, 2));
        int ok = copy_slice(&src, PyTuple_GET_ITEM(ref, 0), a, b, names, nc, out, types, total,
                            pos);
        if (ok <= 0) {
            for (Py_ssize_t c = 0; c <= nc; c++) Py_XDECREF(out[c]);
            if (ok < 0) return NULL;
            Py_RETURN_NONE;
        }
        pos += b - a;
    }
    return gathered(out, names, nc);
}

/* ------------------------------------------------------------------ a tail's slices */
/* MemTable._build (seqvault/memtable.py): a user's (chunk, start, stop) slices, walked newest
 * first along the entry chain. A hot user's tail is one entry per append call, so the walk is
 * 2,048 steps per seal: ~1.8 ms in Python, the largest single cost of a seal. */

PyDoc_STRVAR(chain_doc,
"chain(blocks, e_block, e_start, e_stop, e_prev, e_end, e, through)\n--\n\n"
"The slices [(block, start, stop), ...] of the entry chain that starts at entry `e` (newest)\n"
"and follows e_prev, oldest first; the walk stops at the first entry whose record ends\n"
"(e_end) at or below `through` (that entry and every older one were sealed).");

static PyObject *chain_refs(PyObject *self, PyObject *args) {
    PyObject *blocks, *arrs[5];
    long long e, through;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!OOOOOLL", &PyList_Type, &blocks, &arrs[0], &arrs[1],
                          &arrs[2], &arrs[3], &arrs[4], &e, &through))
        return NULL;
    Py_buffer views[5];
    int64_t *q[5]; /* e_block, e_start, e_stop, e_prev, e_end */
    if (q_buffers(arrs, 5, views, q) < 0) return NULL;
    Py_ssize_t n_entries = views[0].len / 8, n_blocks = PyList_GET_SIZE(blocks);
    for (int a = 1; a < 5; a++)
        if (views[a].len / 8 < n_entries) n_entries = views[a].len / 8;
    PyObject *out = PyList_New(0);
    int ok = out != NULL;
    /* at most one step per entry: a broken chain cannot loop forever */
    for (Py_ssize_t steps = 0; ok && e >= 0; steps++) {
        int64_t ci;
        if (e >= n_entries || steps >= n_entries || (ci = q[0][e]) < 0 || ci >= n_blocks) {
            PyErr_SetString(PyExc_IndexError, "chain: entry or block index out of range");
            ok = 0;
            break;
        }
        if (q[4][e] <= through) break;
        PyObject *ref = Py_BuildValue("(OLL)", PyList_GET_ITEM(blocks, ci), (long long)q[1][e],
                                      (long long)q[2][e]);
        if (!ref || PyList_Append(out, ref) < 0) ok = 0;
        Py_XDECREF(ref);
        e = q[3][e];
    }
    for (int a = 0; a < 5; a++) PyBuffer_Release(&views[a]);
    if (!ok || PyList_Reverse(out) < 0) {
        Py_XDECREF(out);
        return NULL;
    }
    return out;
}

PyDoc_STRVAR(gather_chain_doc,
"gather_chain(blocks, e_end, e_block, e_start, e_stop, e_prev, e, through, names)\n--\n\n"
"`chain` and `gather` in one pass, without a slice object per entry: the columns of the\n"
"entry chain from entry `e` (newest) back to the first entry whose record ends (e_end) at or\n"
"below `through`, oldest first, as new arrays (ts, {name: values}). None when the chain is\n"
"empty or an array is not 1-D contiguous of one dtype (the caller then walks in Python).");

static PyObject *gather_chain(PyObject *self, PyObject *args) {
    PyObject *blocks, *arrs[5], *names;
    long long e, through;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!OOOOOLLO!", &PyList_Type, &blocks, &arrs[0], &arrs[1],
                          &arrs[2], &arrs[3], &arrs[4], &e, &through, &PyTuple_Type, &names))
        return NULL;
    Py_ssize_t nc = PyTuple_GET_SIZE(names);
    if (nc > MAX_COLS) Py_RETURN_NONE;
    Py_buffer views[5];
    int64_t *q[5];  /* e_end, e_block, e_start, e_stop, e_prev */
    if (q_buffers(arrs, 5, views, q) < 0) return NULL;
    Py_ssize_t n_entries = views[1].len / 8, n_blocks = PyList_GET_SIZE(blocks);
    for (int a = 0; a < 5; a++)
        if (views[a].len / 8 < n_entries) n_entries = views[a].len / 8;
    int64_t *walk = NULL;
    PyObject *out[MAX_COLS + 1] = {NULL};
    slice_src src = {NULL, {NULL}};
    PyObject *result = NULL;
    int types[MAX_COLS + 1];
    Py_ssize_t n = 0;
    npy_intp total = 0;
    int ok = 1;
    if (n_entries > 0 && !(walk = PyMem_Malloc((size_t)n_entries * sizeof(int64_t)))) {
        PyErr_NoMemory();
        goto done;
    }
    /* the walk, newest first; at most one step per entry: a broken chain cannot loop */
    while (e >= 0) {
        int64_t ci;
        if (e >= n_entries || n >= n_entries || (ci = q[1][e]) < 0 || ci >= n_blocks
                || q[2][e] < 0 || q[3][e] < q[2][e]) {
            PyErr_SetString(PyExc_IndexError, "gather_chain: entry or block index out of range");
            goto done;
        }
        if (q[0][e] <= through) break;  /* this entry and every older one were sealed */
        walk[n++] = e;
        total += q[3][e] - q[2][e];
        e = q[4][e];
    }
    if (n == 0) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    npy_intp pos = 0;
    for (Py_ssize_t i = n - 1; i >= 0 && ok > 0; i--) {
        int64_t x = walk[i];
        ok = copy_slice(&src, PyList_GET_ITEM(blocks, q[1][x]), (Py_ssize_t)q[2][x],
                        (Py_ssize_t)q[3][x], names, nc, out, types, total, pos);
        pos += q[3][x] - q[2][x];
    }
    if (ok > 0) {
        result = gathered(out, names, nc);  /* releases out */
        for (Py_ssize_t c = 0; c <= nc; c++) out[c] = NULL;
    } else if (ok == 0) {
        result = Py_None;
        Py_INCREF(result);
    }
done:
    for (Py_ssize_t c = 0; c <= nc; c++) Py_XDECREF(out[c]);
    PyMem_Free(walk);
    for (int a = 0; a < 5; a++) PyBuffer_Release(&views[a]);
    return result;
}

/* ------------------------------------------------------------------ byte-plane scatter */
/* segment_batch._scatter: every value's low `width` bytes to its user's byte planes. In numpy
 * that is a fancy-index assignment per byte plane and width (~14 ms a column for a 262k-event
 * flush); here one pass, without the GIL. */

PyDoc_STRVAR(scatter_doc,
"scatter(values, user_of, rank, offsets, m, width, total, plain=False)\n--\n\n"
"A new uint8 array of `total` zero bytes where byte p of values[i] (uint64) is written at\n"
"offsets[u] + p * m[u] + rank[i], u = user_of[i], for p < width[u] (int64 arrays, width 0..8):\n"
"each user's values byte-plane shuffled in place. With `plain`, a tuple (that array, the same\n"
"bytes unshuffled: byte p of values[i] at offsets[u] + rank[i] * width[u] + p). IndexError\n"
"for a user or position outside the arrays, ValueError for a width above 8 or arrays of\n"
"unequal lengths.");

static PyObject *scatter(PyObject *self, PyObject *args) {
    PyObject *objs[6];
    long long total;
    int want_plain = 0;
    if (!PyArg_ParseTuple(args, "OOOOOOL|p", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4],
                          &objs[5], &total, &want_plain))
        return NULL;
    PyArrayObject *a[6] = {NULL};
    PyObject *out = NULL, *plain = NULL, *result = NULL;
    for (int k = 0; k < 6; k++) {
        a[k] = (PyArrayObject *)PyArray_FROM_OTF(objs[k], k == 0 ? NPY_UINT64 : NPY_INT64,
                                                 NPY_ARRAY_IN_ARRAY);
        if (!a[k]) goto done;
    }
    npy_intp n = PyArray_SIZE(a[0]), n_users = PyArray_SIZE(a[3]);
    if (PyArray_SIZE(a[1]) != n || PyArray_SIZE(a[2]) != n || PyArray_SIZE(a[4]) != n_users
            || PyArray_SIZE(a[5]) != n_users || total < 0) {
        PyErr_SetString(PyExc_ValueError, "scatter: arrays of unequal lengths");
        goto done;
    }
    npy_intp dims[1] = {(npy_intp)total};
    out = PyArray_ZEROS(1, dims, NPY_UINT8, 0);
    if (!out) goto done;
    if (want_plain && !(plain = PyArray_ZEROS(1, dims, NPY_UINT8, 0))) goto done;
    const uint64_t *v = PyArray_DATA(a[0]);
    const int64_t *uo = PyArray_DATA(a[1]), *rank = PyArray_DATA(a[2]);
    const int64_t *off = PyArray_DATA(a[3]), *m = PyArray_DATA(a[4]), *wd = PyArray_DATA(a[5]);
    uint8_t *o = PyArray_DATA((PyArrayObject *)out);
    uint8_t *pl = plain ? PyArray_DATA((PyArrayObject *)plain) : NULL;
    int bad = 0;  /* 1: index out of range, 2: width */
    Py_BEGIN_ALLOW_THREADS
    for (npy_intp i = 0; i < n; i++) {
        int64_t u = uo[i];
        if (u < 0 || u >= n_users) { bad = 1; break; }
        int64_t w = wd[u];
        if (w < 0 || w > 8) { bad = 2; break; }
        if (w == 0) continue;
        int64_t first = off[u] + rank[i], last = first + (w - 1) * m[u];
        int64_t pfirst = off[u] + rank[i] * w;
        if (first < 0 || last < 0 || first >= total || last >= total
                || (pl && (pfirst < 0 || pfirst + w > total))) { bad = 1; break; }
        uint64_t x = v[i];
        for (int64_t p = 0; p < w; p++, x >>= 8) {
            o[first + p * m[u]] = (uint8_t)(x & 0xff);
            if (pl) pl[pfirst + p] = (uint8_t)(x & 0xff);
        }
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(bad == 1 ? PyExc_IndexError : PyExc_ValueError,
                        bad == 1 ? "scatter: a user or byte position outside the arrays"
                                 : "scatter: a width above 8 bytes");
        goto done;
    }
    if (plain) {
        result = PyTuple_Pack(2, out, plain);
    } else {
        result = out;
        Py_INCREF(result);
    }
done:
    for (int k = 0; k < 6; k++) Py_XDECREF(a[k]);
    Py_XDECREF(out);
    Py_XDECREF(plain);
    return result;
}

static PyMethodDef methods[] = {
    {"gather", gather_refs, METH_VARARGS, gather_doc},
    {"prepare", prepare, METH_VARARGS, prepare_doc},
    {"add_call", add_call, METH_VARARGS, add_call_doc},
    {"append_call", append_call, METH_VARARGS, append_call_doc},
    {"chain", chain_refs, METH_VARARGS, chain_doc},
    {"gather_chain", gather_chain, METH_VARARGS, gather_chain_doc},
    {"scatter", scatter, METH_VARARGS, scatter_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "native_append",
    "SeqVault's compiled append kernel (seqvault/native_append.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_native_append(void) {
    import_array();
    frombytes_name = PyUnicode_InternFromString("frombytes");
    ts_name = PyUnicode_InternFromString("ts");
    cols_name = PyUnicode_InternFromString("cols");
    refs_name = PyUnicode_InternFromString("refs");
    count_name = PyUnicode_InternFromString("count");
    fill_name = PyUnicode_InternFromString("fill");
    ends_name = PyUnicode_InternFromString("ends");
    codes_name = PyUnicode_InternFromString("codes");
    values_name = PyUnicode_InternFromString("values");
    if (!codes_name || !values_name) return NULL;
    if (!frombytes_name || !ts_name || !cols_name || !refs_name || !count_name || !fill_name ||
        !ends_name)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "RING_HEADER", RING_HEADER) < 0 ||
              PyModule_AddIntConstant(m, "RING_RECORD_MAX", RING_RECORD_MAX) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
