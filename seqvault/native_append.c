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
#include <stdint.h>
#include <string.h>

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

static PyObject *prepare(PyObject *self, PyObject *args) {
    PyObject *spec, *key, *users, *columns;
    long long min_ts;
    if (!PyArg_ParseTuple(args, "O!OOO!L", &PyTuple_Type, &spec, &key, &users, &PyDict_Type,
                          &columns, &min_ts))
        return NULL;
    if (!LITTLE_HOST) Py_RETURN_NONE;
    long long version, max_ts;
    PyObject *time_name, *cols_spec;
    if (!PyArg_ParseTuple(spec, "LOLO!", &version, &time_name, &max_ts, &PyTuple_Type,
                          &cols_spec))
        return NULL;
    Py_ssize_t ncols = PyTuple_GET_SIZE(cols_spec);
    if (ncols > MAX_COLS) Py_RETURN_NONE;
    /* exactly the schema's columns (the user column too, for a batch): no more, no fewer */
    if (PyDict_GET_SIZE(columns) != ncols + 1 + (users != Py_None)) Py_RETURN_NONE;

    Py_ssize_t n = -1;
    src_t ts_src, srcs[MAX_COLS], user_src;
    PyObject *tv = PyDict_GetItemWithError(columns, time_name);
    if (!tv) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    if (!open_src(tv, NPY_INT64, &n, &ts_src)) Py_RETURN_NONE;
    if (n <= 0 || n > MAX_ROWS) Py_RETURN_NONE;
    int allow_nan[MAX_COLS];
    for (Py_ssize_t c = 0; c < ncols; c++) {
        PyObject *cs = PyTuple_GET_ITEM(cols_spec, c);
        PyObject *name = PyTuple_GET_ITEM(cs, 0);
        int typenum = (int)PyLong_AsLong(PyTuple_GET_ITEM(cs, 1));
        if (typenum == -1 && PyErr_Occurred()) return NULL;
        allow_nan[c] = PyObject_IsTrue(PyTuple_GET_ITEM(cs, 2));
        PyObject *v = PyDict_GetItemWithError(columns, name);
        if (!v) {
            if (PyErr_Occurred()) return NULL;
            Py_RETURN_NONE;
        }
        if (!open_src(v, typenum, &n, &srcs[c])) Py_RETURN_NONE;
    }

    /* rows grouped by user, each user's rows in call order, users in ascending key order (a
     * stable sort, as validate_batch's np.argsort(kind="stable")) */
    Py_ssize_t order_buf[MAX_ROWS];
    int64_t ukeys[MAX_ROWS];
    Py_ssize_t counts[MAX_ROWS];
    Py_ssize_t nk = 0;
    for (Py_ssize_t i = 0; i < n; i++) order_buf[i] = i;
    if (users != Py_None) {
        if (!open_src(users, NPY_INT64, &n, &user_src)) Py_RETURN_NONE;
        int64_t uv[MAX_ROWS];
        for (Py_ssize_t i = 0; i < n; i++) {
            int r = user_src.data ? (memcpy(&uv[i], user_src.data + i * user_src.stride, 8), 1)
                                  : list_value(&user_src, i, (uint8_t *)&uv[i]);
            if (r < 0) return NULL;
            if (r == 0) Py_RETURN_NONE;
        }
        int sorted = 1;
        for (Py_ssize_t i = 1; i < n && sorted; i++) sorted = uv[i - 1] <= uv[i];
        if (!sorted) {
            /* stable merge sort of row numbers by user */
            Py_ssize_t tmp[MAX_ROWS];
            Py_ssize_t *a = order_buf, *t = tmp;
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
            if (a != order_buf) memcpy(order_buf, a, (size_t)n * sizeof(Py_ssize_t));
        }
        for (Py_ssize_t j = 0; j < n; j++) {
            int64_t u = uv[order_buf[j]];
            if (nk && ukeys[nk - 1] == u) {
                counts[nk - 1]++;
            } else {
                ukeys[nk] = u;
                counts[nk++] = 1;
            }
        }
    }

    PyObject *owned[MAX_COLS + 4] = {NULL};
    int n_owned = 0;
    buf_t b = {NULL, 0, 0};
    npy_intp dims[1] = {n};

    /* timestamps: in 0..max_ts and not below min_ts (implausible or past retention) */
    PyObject *ts = PyArray_SimpleNew(1, dims, NPY_INT64);
    if (!ts) return fail(owned, n_owned, &b);
    owned[n_owned++] = ts;
    int64_t *tsd = (int64_t *)PyArray_DATA((PyArrayObject *)ts);
    int r = gather(&ts_src, order_buf, n, (uint8_t *)tsd);
    if (r < 0) return fail(owned, n_owned, &b);
    if (r == 0) return fallback(owned, n_owned, &b);
    for (Py_ssize_t i = 0; i < n; i++)
        if (tsd[i] < 0 || tsd[i] > max_ts || tsd[i] < min_ts) return fallback(owned, n_owned, &b);

    PyObject *cols = PyDict_New();
    if (!cols) return fail(owned, n_owned, &b);
    owned[n_owned++] = cols;
    PyObject *arrays[MAX_COLS];
    for (Py_ssize_t c = 0; c < ncols; c++) {
        PyObject *cs = PyTuple_GET_ITEM(cols_spec, c);
        PyObject *arr = PyArray_SimpleNew(1, dims, srcs[c].typenum);
        if (!arr) return fail(owned, n_owned, &b);
        int set = PyDict_SetItem(cols, PyTuple_GET_ITEM(cs, 0), arr);
        Py_DECREF(arr); /* the dict holds it */
        if (set < 0) return fail(owned, n_owned, &b);
        arrays[c] = arr;
        uint8_t *d = PyArray_DATA((PyArrayObject *)arr);
        if (srcs[c].typenum == NPY_OBJECT) { /* a string column: exact str objects only */
            PyObject **o = (PyObject **)d;
            for (Py_ssize_t j = 0; j < n; j++) {
                Py_ssize_t i = order_buf[j];
                PyObject *x = srcs[c].list ? PyList_GET_ITEM(srcs[c].list, i)
                                           : *(PyObject **)(srcs[c].data + i * srcs[c].stride);
                if (!x || !PyUnicode_CheckExact(x)) return fallback(owned, n_owned, &b);
                Py_INCREF(x);
                Py_XSETREF(o[j], x);
            }
            continue;
        }
        r = gather(&srcs[c], order_buf, n, d);
        if (r < 0) return fail(owned, n_owned, &b);
        if (r == 0) return fallback(owned, n_owned, &b);
        int t = srcs[c].typenum;
        if (t == NPY_BOOL) {
            for (Py_ssize_t i = 0; i < n; i++)
                if (d[i] > 1) return fallback(owned, n_owned, &b); /* not a canonical bool */
        } else if (!allow_nan[c] && (t == NPY_FLOAT32 || t == NPY_FLOAT64)) {
            for (Py_ssize_t i = 0; i < n; i++) {
                double x = t == NPY_FLOAT32 ? (double)((float *)d)[i] : ((double *)d)[i];
                if (x != x) return fallback(owned, n_owned, &b);
            }
        }
    }

    /* keys and counts as Python lists, as validate_batch returns them */
    PyObject *keys = PyList_New(users != Py_None ? nk : 1);
    if (!keys) return fail(owned, n_owned, &b);
    owned[n_owned++] = keys;
    PyObject *cnts = PyList_New(users != Py_None ? nk : 1);
    if (!cnts) return fail(owned, n_owned, &b);
    owned[n_owned++] = cnts;
    if (users == Py_None) {
        Py_INCREF(key);
        PyList_SET_ITEM(keys, 0, key);
        PyObject *c = PyLong_FromSsize_t(n);
        if (!c) return fail(owned, n_owned, &b);
        PyList_SET_ITEM(cnts, 0, c);
    } else {
        for (Py_ssize_t k = 0; k < nk; k++) {
            PyObject *kk = PyLong_FromLongLong(ukeys[k]);
            if (!kk) return fail(owned, n_owned, &b);
            PyList_SET_ITEM(keys, k, kk);
            PyObject *c = PyLong_FromSsize_t(counts[k]);
            if (!c) return fail(owned, n_owned, &b);
            PyList_SET_ITEM(cnts, k, c);
        }
    }

    /* the payload */
    Py_ssize_t nkeys = PyList_GET_SIZE(keys);
    if (w_head(&b, 0x85, 0, 0) < 0 || w_str(&b, "v", 1) < 0 || w_int(&b, version) < 0 ||
        w_str(&b, "k", 1) < 0 || w_container(&b, (size_t)nkeys, 0x90, 0xdc, 0xdd) < 0)
        return fail(owned, n_owned, &b);
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        PyObject *kk = PyList_GET_ITEM(keys, k);
        int rr;
        if (PyLong_CheckExact(kk)) {
            long long v = PyLong_AsLongLong(kk);
            if (v == -1 && PyErr_Occurred()) return fail(owned, n_owned, &b);
            rr = w_int(&b, v);
        } else if (PyUnicode_CheckExact(kk)) {
            rr = w_pystr(&b, kk);
        } else {
            return fallback(owned, n_owned, &b);
        }
        if (rr < 0) return fail(owned, n_owned, &b);
    }
    if (w_str(&b, "n", 1) < 0 || w_container(&b, (size_t)nkeys, 0x90, 0xdc, 0xdd) < 0)
        return fail(owned, n_owned, &b);
    for (Py_ssize_t k = 0; k < nkeys; k++)
        if (w_int(&b, PyLong_AsLongLong(PyList_GET_ITEM(cnts, k))) < 0)
            return fail(owned, n_owned, &b);
    if (w_str(&b, "t", 1) < 0 || w_bin_head(&b, (size_t)n * 8) < 0 ||
        w_raw(&b, tsd, (size_t)n * 8) < 0 || w_str(&b, "c", 1) < 0 ||
        w_container(&b, (size_t)ncols, 0x80, 0xde, 0xdf) < 0)
        return fail(owned, n_owned, &b);
    for (Py_ssize_t c = 0; c < ncols; c++) {
        PyObject *cs = PyTuple_GET_ITEM(cols_spec, c);
        if (srcs[c].typenum == NPY_OBJECT) { /* a list of str, as msgpack packs arr.tolist() */
            if (w_pystr(&b, PyTuple_GET_ITEM(cs, 0)) < 0 ||
                w_container(&b, (size_t)n, 0x90, 0xdc, 0xdd) < 0)
                return fail(owned, n_owned, &b);
            PyObject **o = (PyObject **)PyArray_DATA((PyArrayObject *)arrays[c]);
            for (Py_ssize_t j = 0; j < n; j++) {
                if (w_pystr(&b, o[j]) < 0) {
                    if (!PyErr_ExceptionMatches(PyExc_UnicodeError)) return fail(owned, n_owned, &b);
                    PyErr_Clear(); /* a lone surrogate: Python's path says what is wrong */
                    return fallback(owned, n_owned, &b);
                }
            }
            continue;
        }
        size_t nb = (size_t)n * (size_t)srcs[c].size;
        if (w_pystr(&b, PyTuple_GET_ITEM(cs, 0)) < 0 || w_bin_head(&b, nb) < 0 ||
            w_raw(&b, PyArray_DATA((PyArrayObject *)arrays[c]), nb) < 0)
            return fail(owned, n_owned, &b);
    }
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

PyDoc_STRVAR(add_rows_doc,
"add_rows(users, key_list, keys, counts, count, last, e_chunk, e_start, e_stop, e_prev, ci,\n"
"         seal_at, tails)\n--\n\n"
"Record one chunk's users in the memtable's arrays (MemTable._add_small's reference loop):\n"
"returns (uids, full, top, built): the users' dense ids (int64 array), the keys whose tail\n"
"reached seal_at (none when 0), the largest tail among them, and the positions whose user\n"
"has a built UserTail (the caller extends those).");

/* add_rows' work on parsed arguments: `arrs` are count, last, e_chunk, e_start, e_stop,
 * e_prev. Returns the (uids, full, top, built) tuple. */
static PyObject *add_core(PyObject *users, PyObject *key_list, PyObject *keys, PyObject *counts,
                          PyObject **arrs, long long ci, long long seal_at, PyObject *tails) {
    Py_ssize_t k = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(counts) != k) {
        PyErr_SetString(PyExc_ValueError, "add_rows: keys and counts differ in length");
        return NULL;
    }
    npy_intp dims[1] = {k};
    PyObject *uids = PyArray_SimpleNew(1, dims, NPY_INT64);
    if (!uids) return NULL;
    int64_t *u = (int64_t *)PyArray_DATA((PyArrayObject *)uids);
    PyObject *zeros = NULL, *full = NULL, *built = NULL;
    Py_ssize_t base = PyList_GET_SIZE(key_list), added = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        PyObject *uid = PyDict_GetItemWithError(users, key);
        if (uid) {
            u[i] = PyLong_AsLongLong(uid);
            if (u[i] == -1 && PyErr_Occurred()) goto error;
            continue;
        }
        if (PyErr_Occurred()) goto error;
        u[i] = base + added++;
        uid = PyLong_FromLongLong(u[i]);
        if (!uid) goto error;
        int bad = PyDict_SetItem(users, key, uid) < 0 || PyList_Append(key_list, key) < 0;
        Py_DECREF(uid);
        if (bad) goto error;
    }
    Py_ssize_t e0 = PyObject_Length(arrs[2]);
    if (e0 < 0) goto error;
    if (added) {
        if (!(zeros = zero_bytes(added)) || grow(arrs[0], added, zeros) < 0 ||
            grow(arrs[1], added, zeros) < 0)
            goto error;
        Py_CLEAR(zeros);
    }
    if (!(zeros = zero_bytes(k))) goto error;
    for (int a = 2; a < 6; a++)
        if (grow(arrs[a], k, zeros) < 0) goto error;
    Py_CLEAR(zeros);

    Py_buffer views[6];
    int64_t *q[6];
    if (q_buffers(arrs, 6, views, q) < 0) goto error;
    Py_ssize_t n_users = views[0].len / 8;
    for (Py_ssize_t i = base; i < base + added && i < n_users; i++) q[1][i] = -1;
    int64_t top = 0, start = 0;
    int ok = 1;
    full = PyList_New(0);
    built = PyList_New(0);
    if (!full || !built) ok = 0;
    for (Py_ssize_t i = 0; i < k && ok; i++) {
        long long n = PyLong_AsLongLong(PyList_GET_ITEM(counts, i));
        if ((n == -1 && PyErr_Occurred()) || u[i] < 0 || u[i] >= n_users) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_IndexError, "add_rows: user id out of range");
            ok = 0;
            break;
        }
        int64_t e = e0 + i, uid = u[i];
        q[2][e] = ci;
        q[3][e] = start;
        q[4][e] = start + n;
        q[5][e] = q[1][uid];
        q[1][uid] = e;
        int64_t c = q[0][uid] += n;
        if (c > top) top = c;
        if (seal_at && c >= seal_at && PyList_Append(full, PyList_GET_ITEM(keys, i)) < 0) ok = 0;
        if (ok && PyDict_GET_SIZE(tails)) {
            PyObject *ukey = PyLong_FromLongLong(uid);
            if (!ukey) {
                ok = 0;
                break;
            }
            int has = PyDict_Contains(tails, ukey);
            Py_DECREF(ukey);
            PyObject *pos = has > 0 ? PyLong_FromSsize_t(i) : NULL;
            if (has < 0 || (has > 0 && (!pos || PyList_Append(built, pos) < 0))) ok = 0;
            Py_XDECREF(pos);
        }
        start += n;
    }
    for (int a = 0; a < 6; a++) PyBuffer_Release(&views[a]);
    if (!ok) goto error;
    return Py_BuildValue("(NNLN)", uids, full, (long long)top, built);
error:
    Py_XDECREF(zeros);
    Py_XDECREF(full);
    Py_XDECREF(built);
    Py_DECREF(uids);
    return NULL;
}

static PyObject *add_rows(PyObject *self, PyObject *args) {
    PyObject *users, *key_list, *keys, *counts, *arrs[6], *tails;
    long long ci, seal_at;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!O!O!OOOOOOLLO!", &PyDict_Type, &users, &PyList_Type,
                          &key_list, &PyList_Type, &keys, &PyList_Type, &counts, &arrs[0],
                          &arrs[1], &arrs[2], &arrs[3], &arrs[4], &arrs[5], &ci, &seal_at,
                          &PyDict_Type, &tails))
        return NULL;
    return add_core(users, key_list, keys, counts, arrs, ci, seal_at, tails);
}

static PyObject *refs_name, *count_name, *append_name;

/* Extend the built tails of `built` (positions into keys/counts) by their slice of `chunk`:
 * MemTable._add_small's `tail.refs.append((chunk, start, stop)); tail.count = c`. Adds the
 * rows and slices to *rows and *refs. */
static int extend_built(PyObject *built, PyObject *tails, PyObject *chunk, PyObject *counts,
                        const int64_t *u, PyObject *count, long long *rows, long long *refs) {
    Py_ssize_t nb = PyList_GET_SIZE(built), k = PyList_GET_SIZE(counts);
    if (!nb) return 0;
    int64_t *stops = PyMem_Malloc((size_t)(k ? k : 1) * sizeof(int64_t));
    if (!stops) {
        PyErr_NoMemory();
        return -1;
    }
    int64_t at = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        long long n = PyLong_AsLongLong(PyList_GET_ITEM(counts, i));
        if (n == -1 && PyErr_Occurred()) goto error;
        stops[i] = at += n;
    }
    for (Py_ssize_t j = 0; j < nb; j++) {
        Py_ssize_t i = PyLong_AsSsize_t(PyList_GET_ITEM(built, j));
        if (i == -1 && PyErr_Occurred()) goto error;
        int64_t start = i ? stops[i - 1] : 0, stop = stops[i];
        PyObject *ukey = PyLong_FromLongLong(u[i]);
        if (!ukey) goto error;
        PyObject *tail = PyDict_GetItemWithError(tails, ukey); /* borrowed */
        PyObject *c = tail ? PySequence_GetItem(count, (Py_ssize_t)u[i]) : NULL;
        Py_DECREF(ukey);
        if (!tail || !c) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "add_call: built tail gone");
            Py_XDECREF(c);
            goto error;
        }
        PyObject *tail_refs = PyObject_GetAttr(tail, refs_name);
        PyObject *ref = tail_refs ? Py_BuildValue("(OLL)", chunk, (long long)start,
                                                  (long long)stop) : NULL;
        int bad = !ref || PyList_Append(tail_refs, ref) < 0 ||
                  PyObject_SetAttr(tail, count_name, c) < 0;
        Py_XDECREF(ref);
        Py_XDECREF(tail_refs);
        Py_DECREF(c);
        if (bad) goto error;
        *rows += stop - start;
        *refs += 1;
    }
    PyMem_Free(stops);
    return 0;
error:
    PyMem_Free(stops);
    return -1;
}

static void untrack_one(PyObject *o) {
    if (PyObject_IS_GC(o) && PyObject_GC_IsTracked(o)) PyObject_GC_UnTrack(o);
}

PyDoc_STRVAR(add_call_doc,
"add_call(parts, chunk, keys, counts, end, seal_at)\n--\n\n"
"Add one append call's chunk to the memtable (MemTable._add_compiled): add_rows' work, then\n"
"the built tails of its users extended by their slices, the (chunk, uids, counts) entry and\n"
"the chunk's log end `end` appended to `chunks` and `c_end`, and the chunk, counts and entry\n"
"taken out of the cyclic collector. `parts` is MemTable._parts: (users, key_list, count,\n"
"last, e_chunk, e_start, e_stop, e_prev, chunks, c_end, tails). Returns (full, top,\n"
"tail_rows, tail_refs): the keys whose tail reached seal_at, the largest tail among the\n"
"call's users, and the rows and slices the built tails grew by.");

/* One C call per append instead of add_rows plus the Python around it: at calls of one event
 * that Python (a tuple, two list appends, attribute updates, untrack) cost about as much as
 * add_rows itself (docs/design/realtime.md, "One call per append"). */
static PyObject *add_call(PyObject *self, PyObject *args) {
    PyObject *parts, *chunk, *keys, *counts;
    long long end, seal_at;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!OO!O!LL", &PyTuple_Type, &parts, &chunk, &PyList_Type, &keys,
                          &PyList_Type, &counts, &end, &seal_at))
        return NULL;
    if (PyTuple_GET_SIZE(parts) != 11) {
        PyErr_SetString(PyExc_TypeError, "add_call: parts must be an 11-tuple");
        return NULL;
    }
    PyObject *users = PyTuple_GET_ITEM(parts, 0), *key_list = PyTuple_GET_ITEM(parts, 1);
    PyObject *arrs[6];
    for (int a = 0; a < 6; a++) arrs[a] = PyTuple_GET_ITEM(parts, 2 + a);
    PyObject *chunks = PyTuple_GET_ITEM(parts, 8), *c_end = PyTuple_GET_ITEM(parts, 9);
    PyObject *tails = PyTuple_GET_ITEM(parts, 10);
    if (!PyDict_Check(users) || !PyList_Check(key_list) || !PyList_Check(chunks) ||
        !PyDict_Check(tails)) {
        PyErr_SetString(PyExc_TypeError, "add_call: parts of the wrong types");
        return NULL;
    }
    PyObject *got = add_core(users, key_list, keys, counts, arrs, PyList_GET_SIZE(chunks),
                             seal_at, tails);
    if (!got) return NULL;
    PyObject *uids = PyTuple_GET_ITEM(got, 0), *full = PyTuple_GET_ITEM(got, 1);
    PyObject *built = PyTuple_GET_ITEM(got, 3);
    long long top = PyLong_AsLongLong(PyTuple_GET_ITEM(got, 2)), rows = 0, refs = 0;
    const int64_t *u = (const int64_t *)PyArray_DATA((PyArrayObject *)uids);
    PyObject *entry = NULL, *r = NULL;
    if (extend_built(built, tails, chunk, counts, u, arrs[0], &rows, &refs) < 0) goto error;
    if (!(entry = PyTuple_Pack(3, chunk, uids, counts)) || PyList_Append(chunks, entry) < 0)
        goto error;
    PyObject *end_obj = PyLong_FromLongLong(end);
    if (!end_obj) goto error;
    r = PyObject_CallMethodOneArg(c_end, append_name, end_obj);
    Py_DECREF(end_obj);
    if (!r) goto error;
    Py_DECREF(r);
    /* None of the three can be in a cycle (arrays, ints, a dict of arrays): untracked, a
     * memtable of many calls costs the collector's full passes nothing. */
    untrack_one(chunk);
    untrack_one(counts);
    untrack_one(entry);
    Py_DECREF(entry);
    PyObject *out = Py_BuildValue("(OLLL)", full, top, rows, refs);
    Py_DECREF(got);
    return out;
error:
    Py_XDECREF(entry);
    Py_DECREF(got);
    return NULL;
}

/* ------------------------------------------------------------------ a tail's arrays */
/* UserTail.arrays (seqvault/memtable.py) for a tail of many slices: a hot user's tail is one
 * slice per append call, so sealing 2,048 events gathered 2,048 numpy slices per column
 * (~2 ms per seal in Python, the largest CPU cost of 100-event appends after the kernel). */

static PyObject *ts_name, *cols_name;

PyDoc_STRVAR(gather_doc,
"gather(refs, names)\n--\n\n"
"(ts, {name: array}): the (chunk, start, stop) slices of `refs` concatenated, or None when\n"
"an array is not a 1-D contiguous array of the first slice's dtype (Python then gathers).");

/* Copy rows [a, b) of one chunk's arrays (ts, then `names` of chunk.cols) to position `pos` of
 * `out`, allocating `out` (of `total` rows) at the first slice. 1: copied; 0: an array that is
 * not 1-D contiguous of the first slice's dtype (the caller falls back); -1: an error. */
static int copy_slice(PyObject *chunk, Py_ssize_t a, Py_ssize_t b, PyObject *names,
                      Py_ssize_t nc, PyObject **out, int *types, npy_intp total, npy_intp pos) {
    PyObject *ts = PyObject_GetAttr(chunk, ts_name);
    PyObject *cd = ts ? PyObject_GetAttr(chunk, cols_name) : NULL;
    int ok = cd && PyDict_Check(cd) ? 1 : (PyErr_Occurred() ? -1 : 0);
    for (Py_ssize_t c = 0; ok > 0 && c <= nc; c++) {
        PyObject *arr = c == 0 ? ts : PyDict_GetItemWithError(cd, PyTuple_GET_ITEM(names, c - 1));
        if (!arr || !PyArray_CheckExact(arr)) {
            ok = PyErr_Occurred() ? -1 : 0;
            break;
        }
        PyArrayObject *x = (PyArrayObject *)arr;
        if (PyArray_NDIM(x) != 1 || !PyArray_IS_C_CONTIGUOUS(x) || PyArray_DIM(x, 0) < b) {
            ok = 0;
            break;
        }
        if (out[c] == NULL) {
            types[c] = PyArray_TYPE(x);
            npy_intp dims[1] = {total};
            out[c] = PyArray_SimpleNew(1, dims, types[c]);
            if (!out[c]) {
                ok = -1;
                break;
            }
        } else if (PyArray_TYPE(x) != types[c]) {
            ok = 0;
            break;
        }
        npy_intp item = PyArray_ITEMSIZE(x);
        memcpy((char *)PyArray_DATA((PyArrayObject *)out[c]) + pos * item,
               (char *)PyArray_DATA(x) + a * item, (size_t)((b - a) * item));
    }
    Py_XDECREF(ts);
    Py_XDECREF(cd);
    return ok;
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
    npy_intp pos = 0;
    for (Py_ssize_t r = 0; r < nr; r++) {
        PyObject *ref = PyList_GET_ITEM(refs, r);
        Py_ssize_t a = PyLong_AsSsize_t(PyTuple_GET_ITEM(ref, 1));
        Py_ssize_t b = PyLong_AsSsize_t(PyTuple_GET_ITEM(ref, 2));
        int ok = copy_slice(PyTuple_GET_ITEM(ref, 0), a, b, names, nc, out, types, total, pos);
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

static PyObject *end_name;

PyDoc_STRVAR(chain_doc,
"chain(chunks, e_chunk, e_start, e_stop, e_prev, e, through)\n--\n\n"
"The slices [(chunk, start, stop), ...] of the entry chain that starts at entry `e` (newest)\n"
"and follows e_prev, oldest first; the walk stops at the first chunk whose `end` is at or\n"
"below `through` (that chunk and every older one were sealed).");

static PyObject *chain_refs(PyObject *self, PyObject *args) {
    PyObject *chunks, *arrs[4];
    long long e, through;
    if (!PyArg_ParseTuple(args, "O!OOOOLL", &PyList_Type, &chunks, &arrs[0], &arrs[1],
                          &arrs[2], &arrs[3], &e, &through))
        return NULL;
    Py_buffer views[4];
    int64_t *q[4];
    if (q_buffers(arrs, 4, views, q) < 0) return NULL;
    Py_ssize_t n_entries = views[0].len / 8, n_chunks = PyList_GET_SIZE(chunks);
    PyObject *out = PyList_New(0);
    int ok = out != NULL;
    /* at most one step per entry: a broken chain cannot loop forever */
    for (Py_ssize_t steps = 0; ok && e >= 0; steps++) {
        int64_t ci;
        if (e >= n_entries || steps >= n_entries || (ci = q[0][e]) < 0 || ci >= n_chunks) {
            PyErr_SetString(PyExc_IndexError, "chain: entry or chunk index out of range");
            ok = 0;
            break;
        }
        PyObject *item = PyList_GET_ITEM(chunks, ci);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 1) {
            PyErr_SetString(PyExc_TypeError, "chain: chunks must hold (chunk, uids, counts)");
            ok = 0;
            break;
        }
        PyObject *chunk = PyTuple_GET_ITEM(item, 0);
        PyObject *end_obj = PyObject_GetAttr(chunk, end_name);
        if (!end_obj) {
            ok = 0;
            break;
        }
        long long end = PyLong_AsLongLong(end_obj);
        Py_DECREF(end_obj);
        if (end == -1 && PyErr_Occurred()) {
            ok = 0;
            break;
        }
        if (end <= through) break;
        PyObject *ref = Py_BuildValue("(OLL)", chunk, (long long)q[1][e], (long long)q[2][e]);
        if (!ref || PyList_Append(out, ref) < 0) ok = 0;
        Py_XDECREF(ref);
        e = q[3][e];
    }
    for (int a = 0; a < 4; a++) PyBuffer_Release(&views[a]);
    if (!ok || PyList_Reverse(out) < 0) {
        Py_XDECREF(out);
        return NULL;
    }
    return out;
}

PyDoc_STRVAR(gather_chain_doc,
"gather_chain(chunks, c_end, e_chunk, e_start, e_stop, e_prev, e, through, names)\n--\n\n"
"`chain` and `gather` in one pass, without a slice object per entry: the columns of the\n"
"entry chain from entry `e` (newest) back to the first chunk whose end (`c_end[chunk]`) is at\n"
"or below `through`, oldest first, as new arrays (ts, {name: values}). None when the chain is\n"
"empty or an array is not 1-D contiguous of one dtype (the caller then walks in Python).");

static PyObject *gather_chain(PyObject *self, PyObject *args) {
    PyObject *chunks, *arrs[5], *names;
    long long e, through;
    if (!PyArg_ParseTuple(args, "O!OOOOOLLO!", &PyList_Type, &chunks, &arrs[0], &arrs[1],
                          &arrs[2], &arrs[3], &arrs[4], &e, &through, &PyTuple_Type, &names))
        return NULL;
    Py_ssize_t nc = PyTuple_GET_SIZE(names);
    if (nc > MAX_COLS) Py_RETURN_NONE;
    Py_buffer views[5];
    int64_t *q[5];  /* c_end, e_chunk, e_start, e_stop, e_prev */
    if (q_buffers(arrs, 5, views, q) < 0) return NULL;
    Py_ssize_t n_entries = views[1].len / 8, n_chunks = PyList_GET_SIZE(chunks);
    Py_ssize_t n_ends = views[0].len / 8;
    int64_t *walk = NULL;
    PyObject *out[MAX_COLS + 1] = {NULL};
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
        if (e >= n_entries || n >= n_entries || (ci = q[1][e]) < 0 || ci >= n_chunks
                || ci >= n_ends || q[2][e] < 0 || q[3][e] < q[2][e]) {
            PyErr_SetString(PyExc_IndexError, "gather_chain: entry or chunk index out of range");
            goto done;
        }
        if (q[0][ci] <= through) break;  /* this chunk and every older one were sealed */
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
        PyObject *item = PyList_GET_ITEM(chunks, q[1][x]);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 1) {
            PyErr_SetString(PyExc_TypeError, "gather_chain: chunks must hold (chunk, uids, counts)");
            goto done;
        }
        ok = copy_slice(PyTuple_GET_ITEM(item, 0), (Py_ssize_t)q[2][x], (Py_ssize_t)q[3][x],
                        names, nc, out, types, total, pos);
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

PyDoc_STRVAR(untrack_doc,
"untrack(*objs) -> None\n\n"
"Take each object out of the cyclic collector's lists (a no-op for one it does not track).\n"
"For the memtable's per-call objects (a chunk, its counts list, its entry tuple), which hold\n"
"only arrays, ints and untracked containers and so can never be part of a cycle: a memtable of\n"
"tens of thousands of calls then costs the collector's older generations nothing.");

static PyObject *untrack(PyObject *self, PyObject *args) {
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PyTuple_GET_ITEM(args, i);
        if (PyObject_IS_GC(o) && PyObject_GC_IsTracked(o))
            PyObject_GC_UnTrack(o);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"gather", gather_refs, METH_VARARGS, gather_doc},
    {"prepare", prepare, METH_VARARGS, prepare_doc},
    {"add_rows", add_rows, METH_VARARGS, add_rows_doc},
    {"add_call", add_call, METH_VARARGS, add_call_doc},
    {"chain", chain_refs, METH_VARARGS, chain_doc},
    {"gather_chain", gather_chain, METH_VARARGS, gather_chain_doc},
    {"scatter", scatter, METH_VARARGS, scatter_doc},
    {"untrack", untrack, METH_VARARGS, untrack_doc},
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
    end_name = PyUnicode_InternFromString("end");
    refs_name = PyUnicode_InternFromString("refs");
    count_name = PyUnicode_InternFromString("count");
    append_name = PyUnicode_InternFromString("append");
    if (!frombytes_name || !ts_name || !cols_name || !end_name || !refs_name || !count_name ||
        !append_name)
        return NULL;
    return PyModule_Create(&module);
}
