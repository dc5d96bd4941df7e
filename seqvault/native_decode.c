/* The compiled segment decoder: one call verifies and decodes a whole segment.
 *
 * Layout: docs/format/segment.md (field names below follow its field table). Inverse of
 * seqvault/encoding.py `encode_column`; the pure-Python `decode_columns` in seqvault/segment.py
 * is the reference this code must agree with (tests/format/test_native_decoder.py checks both
 * on valid, truncated and damaged segments).
 *
 * Why compiled: a read of a fresh user decodes a 2,048-event segment, and the Python decoder's
 * fixed cost per segment (header parse, a CRC, a zstd call and ~6 numpy calls per column) was
 * several times the decode itself (docs/design/realtime.md, "Compiled decoder").
 *
 * Errors: this code never raises CorruptionError itself. On anything it does not accept it
 * returns a short reason string, and the Python caller re-runs the reference decoder, which
 * raises the exact documented error (or, for a rare valid input this code does not handle,
 * decodes it). So the messages of both paths are the same by construction.
 *
 * Plain C against the CPython and NumPy C APIs (no Cython): the code is a few loops over
 * bytes, a build needs only a C compiler, libzstd and zlib, and there is no generated source.
 */
#define PY_SSIZE_T_CLEAN
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <Python.h>
#include <numpy/arrayobject.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "native_decode assumes a little-endian host (the segment format is little-endian)"
#endif

#define FORMAT_VERSION 1
#define FIXED_SIZE 36
#define DIR_SIZE 32
#define CRC_SIZE 4

#define ENC_RAW 0
#define ENC_FOR 1
#define ENC_DELTA 2
#define ENC_BITPACK 3
#define ENC_CONST 4
#define FLAG_SHUFFLE 1
#define FLAG_ZSTD 2

/* Above this many payload bytes the decode releases the GIL. Below it the work takes a few
 * microseconds, and taking the GIL back can wait a whole switch interval (5 ms) behind another
 * busy thread: a reader would lose far more than it lets others gain. */
#ifndef GIL_RELEASE_BYTES
#define GIL_RELEASE_BYTES (64 * 1024)
#endif

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

typedef struct {
    uint16_t col_id;
    uint8_t encoding, flags, width, dtype_code;
    uint32_t raw_len, stored_len, crc;
    uint64_t param;
    size_t offset;
} entry_t;

/* dtype codes of the format: numpy type number and item size; 0 = unknown code. */
static int dtype_num(int code) {
    switch (code) {
    case 1: return NPY_BOOL;
    case 2: return NPY_INT8;
    case 3: return NPY_INT16;
    case 4: return NPY_INT32;
    case 5: return NPY_INT64;
    case 6: return NPY_UINT8;
    case 7: return NPY_UINT16;
    case 8: return NPY_UINT32;
    case 9: return NPY_UINT64;
    case 10: return NPY_FLOAT32;
    case 11: return NPY_FLOAT64;
    case 12: return NPY_UINT32; /* string: dictionary codes */
    default: return -1;
    }
}
static int dtype_size(int code) {
    static const int sizes[13] = {0, 1, 1, 2, 4, 8, 1, 2, 4, 8, 4, 8, 4};
    return (code >= 1 && code <= 12) ? sizes[code] : 0;
}
static int dtype_signed(int code) { return code >= 2 && code <= 5; }
static int dtype_integer(int code) { return (code >= 2 && code <= 9) || code == 12; }

/* Does `v` (signed when `sgn`) fit the integer dtype? numpy refuses out-of-range scalars
 * (np.int8(300) raises), and so does the reference decoder. */
static int fits(int code, uint64_t v, int sgn) {
    int bits = 8 * dtype_size(code);
    if (bits == 64) return 1;
    if (dtype_signed(code)) {
        int64_t s = (int64_t)v;
        int64_t lo = -((int64_t)1 << (bits - 1)), hi = ((int64_t)1 << (bits - 1)) - 1;
        return s >= lo && s <= hi;
    }
    if (sgn && (int64_t)v < 0) return 0;
    return v < ((uint64_t)1 << bits);
}

/* Store the low `size` bytes of v (little-endian host: a truncating cast, as numpy's astype). */
static inline void put(uint8_t *out, int size, uint64_t v) {
    switch (size) {
    case 1: out[0] = (uint8_t)v; break;
    case 2: { uint16_t x = (uint16_t)v; memcpy(out, &x, 2); break; }
    case 4: { uint32_t x = (uint32_t)v; memcpy(out, &x, 4); break; }
    default: memcpy(out, &v, 8);
    }
}

#define CHUNK 512

/* `restrict` matters: uint8_t pointers may alias anything, so without it the compiler must
 * assume every store may change the source and cannot vectorise these loops. */

/* Values [start, start+n) of a narrowed payload of `width` bytes, widened into dst. Shuffled
 * payloads are byte planes of `stride` values each (byte 0 of every value, then byte 1, ...). */
static void gather(const uint8_t *restrict p, int width, int shuffled, size_t stride,
                   size_t start, size_t n, uint64_t *restrict dst) {
    if (shuffled) {
        const uint8_t *restrict plane = p + start;
        for (size_t i = 0; i < n; i++) dst[i] = plane[i];
        for (int b = 1; b < width; b++) {
            plane = p + (size_t)b * stride + start;
            for (size_t i = 0; i < n; i++) dst[i] |= (uint64_t)plane[i] << (8 * b);
        }
        return;
    }
    p += start * (size_t)width;
    switch (width) {
    case 1: for (size_t i = 0; i < n; i++) dst[i] = p[i]; break;
    case 2: for (size_t i = 0; i < n; i++) dst[i] = rd16(p + 2 * i); break;
    case 4: for (size_t i = 0; i < n; i++) dst[i] = rd32(p + 4 * i); break;
    default: for (size_t i = 0; i < n; i++) dst[i] = rd64(p + 8 * i);
    }
}

/* out[i] = src[i] + add, truncated to `size` bytes (numpy's wrapping astype). */
static void store(uint8_t *restrict out, int size, const uint64_t *restrict src, size_t n,
                  uint64_t add) {
    switch (size) {
    case 1: for (size_t i = 0; i < n; i++) out[i] = (uint8_t)(src[i] + add); break;
    case 2: for (size_t i = 0; i < n; i++) ((uint16_t *)out)[i] = (uint16_t)(src[i] + add); break;
    case 4: for (size_t i = 0; i < n; i++) ((uint32_t *)out)[i] = (uint32_t)(src[i] + add); break;
    default: for (size_t i = 0; i < n; i++) ((uint64_t *)out)[i] = src[i] + add;
    }
}

typedef struct {
    const entry_t *e;
    uint8_t *out;     /* the output array's data: `rows` values of the column's dtype */
    size_t count;     /* events in the segment */
    size_t rows;      /* values written: the newest `rows` of `count` */
} job_t;

/* Decode one column into job->out. Runs without the GIL: plain memory, no Python objects.
 * Returns NULL on success, else a static reason. `scratch` holds at least raw_len bytes. */
static const char *decode_one(const uint8_t *seg, const job_t *job, uint8_t *scratch,
                              ZSTD_DCtx *dctx) {
    const entry_t *e = job->e;
    const uint8_t *data = seg + e->offset;
    size_t len = e->stored_len;
    if ((uint32_t)crc32(0L, data, (uInt)len) != e->crc) return "checksum mismatch";
    if (e->flags & FLAG_ZSTD) {
        size_t got = ZSTD_decompressDCtx(dctx, scratch, e->raw_len, data, len);
        if (ZSTD_isError(got) || got != e->raw_len) return "zstd frame does not decode";
        data = scratch;
        len = e->raw_len;
    }
    int code = e->dtype_code, size = dtype_size(code);
    size_t count = job->count, rows = job->rows, skip = count - rows;
    uint8_t *out = job->out;
    if (e->encoding == ENC_CONST) {
        uint64_t v = e->param;
        if (code == 1) v = v != 0;
        else if (!dtype_integer(code)) return "CONST float column";
        else if (!fits(code, v, dtype_signed(code))) return "CONST value out of range";
        for (size_t i = 0; i < rows; i++) put(out + i * size, size, v);
        return NULL;
    }
    if (e->encoding == ENC_BITPACK) {
        /* numpy.unpackbits(count=count): big bit order, zero-padded past the payload. Output
         * is bool whatever the dtype code (the caller allocated bool for it). */
        for (size_t i = 0; i < rows; i++) {
            size_t bit = skip + i, byte = bit >> 3;
            out[i] = byte < len ? (data[byte] >> (7 - (bit & 7))) & 1 : 0;
        }
        return NULL;
    }
    int width = e->width;
    if (width != 1 && width != 2 && width != 4 && width != 8) return "bad width";
    size_t stored = e->encoding == ENC_DELTA ? (count ? count - 1 : 0) : count;
    if (len != (size_t)width * stored) return "payload length";
    int shuffled = (e->flags & FLAG_SHUFFLE) && width > 1;
    if (e->encoding == ENC_RAW) {
        if (width != size) return "RAW width differs from the dtype";
        if (!shuffled) {
            memcpy(out, data + skip * width, rows * width);
        } else {
            for (int b = 0; b < width; b++) {
                const uint8_t *plane = data + (size_t)b * count + skip;
                for (size_t i = 0; i < rows; i++) out[i * width + b] = plane[i];
            }
        }
        return NULL;
    }
    if (!dtype_integer(code)) return "integer encoding of a non-integer dtype";
    if (e->encoding == ENC_FOR) {
        /* value = min + offset, wrapping modulo 2**bits: exactly FOR's arithmetic. */
        if (width <= size && !fits(code, e->param, dtype_signed(code))) return "FOR base";
        uint64_t buf[CHUNK];
        for (size_t i = 0; i < rows; i += CHUNK) {
            size_t m = rows - i < CHUNK ? rows - i : CHUNK;
            gather(data, width, shuffled, count, skip + i, m, buf);
            store(out + i * size, size, buf, m, e->param);
        }
        return NULL;
    }
    if (e->encoding == ENC_DELTA) {
        if (count == 0) return NULL;
        /* first value = param, then zigzag-decoded differences summed (int64, wrapping) */
        uint64_t v = e->param, buf[CHUNK];
        if (skip == 0) put(out, size, v);
        for (size_t i = 0; i < stored; i += CHUNK) {
            size_t m = stored - i < CHUNK ? stored - i : CHUNK;
            gather(data, width, shuffled, stored, i, m, buf);
            for (size_t k = 0; k < m; k++) {
                uint64_t z = buf[k];
                v += (z >> 1) ^ (0 - (z & 1));
                buf[k] = v;
            }
            /* rows i+1 .. i+m of the segment; write those at or after `skip` */
            size_t first = i + 1, from = first >= skip ? 0 : skip - first;
            if (from < m) store(out + (first + from - skip) * size, size, buf + from, m - from, 0);
        }
        return NULL;
    }
    return "unknown encoding";
}

/* One decompression context per thread, kept (creating one costs more than decoding a small
 * column) and freed when the thread exits, so threads that come and go do not leak it. */
static pthread_key_t dctx_key;
static pthread_once_t dctx_once = PTHREAD_ONCE_INIT;
static void free_dctx(void *dctx) { ZSTD_freeDCtx((ZSTD_DCtx *)dctx); }
static void make_key(void) { (void)pthread_key_create(&dctx_key, free_dctx); }

static ZSTD_DCtx *thread_dctx(void) {
    pthread_once(&dctx_once, make_key);
    ZSTD_DCtx *dctx = pthread_getspecific(dctx_key);
    if (!dctx) {
        dctx = ZSTD_createDCtx();
        if (dctx && pthread_setspecific(dctx_key, dctx) != 0) {
            ZSTD_freeDCtx(dctx);
            dctx = NULL;
        }
    }
    return dctx;
}

/* decode_segment(buf, col_ids, rows) -> (key, count, min_ts, max_ts, arrays) | reason */
static PyObject *decode_segment(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    PyObject *ids;
    Py_ssize_t want_rows;
    if (!PyArg_ParseTuple(args, "y*O!n", &view, &PyTuple_Type, &ids, &want_rows)) return NULL;
    const uint8_t *seg = view.buf;
    size_t n = (size_t)view.len;
    PyObject *result = NULL, *arrays = NULL;
    entry_t *entries = NULL;
    job_t *jobs = NULL;
    uint8_t *scratch = NULL;
    const char *reason = NULL;
    Py_ssize_t nwant = PyTuple_GET_SIZE(ids);

    if (n < FIXED_SIZE + CRC_SIZE) { reason = "shorter than a header"; goto refuse; }
    if (memcmp(seg, "SVSG", 4) != 0) { reason = "bad magic"; goto refuse; }
    unsigned version = rd16(seg + 4), ncols = rd16(seg + 6), key_len = rd16(seg + 18);
    if (version < 1 || version > FORMAT_VERSION) { reason = "version"; goto refuse; }
    size_t count = rd32(seg + 12);
    size_t hsize = FIXED_SIZE + (size_t)key_len + (size_t)ncols * DIR_SIZE + CRC_SIZE;
    if (n < hsize) { reason = "header longer than the extent"; goto refuse; }
    if ((uint32_t)crc32(0L, seg, (uInt)(hsize - CRC_SIZE)) != rd32(seg + hsize - CRC_SIZE)) {
        reason = "header checksum mismatch";
        goto refuse;
    }
    entries = PyMem_Malloc(sizeof(entry_t) * (ncols ? ncols : 1));
    jobs = PyMem_Malloc(sizeof(job_t) * (nwant ? nwant : 1));
    if (!entries || !jobs) { PyErr_NoMemory(); goto done; }
    uint64_t offset = hsize;
    const uint8_t *d = seg + FIXED_SIZE + key_len;
    for (unsigned c = 0; c < ncols; c++, d += DIR_SIZE) {
        entry_t *e = &entries[c];
        e->col_id = rd16(d);
        e->encoding = d[2];
        e->flags = d[3];
        e->width = d[4];
        e->dtype_code = d[5];
        e->raw_len = rd32(d + 8);
        e->stored_len = rd32(d + 12);
        e->crc = rd32(d + 16);
        e->param = rd64(d + 20);
        e->offset = (size_t)offset;
        offset += e->stored_len;
    }
    if (offset != n) { reason = "column lengths disagree with the extent"; goto refuse; }

    size_t rows = (want_rows < 0 || (size_t)want_rows > count) ? count : (size_t)want_rows;
    arrays = PyTuple_New(nwant);
    if (!arrays) goto done;
    size_t njobs = 0, scratch_len = 0, work = 0;
    int has_zstd = 0;
    for (Py_ssize_t w = 0; w < nwant; w++) {
        long id = PyLong_AsLong(PyTuple_GET_ITEM(ids, w));
        if (id == -1 && PyErr_Occurred()) goto done;
        const entry_t *e = NULL;
        for (unsigned c = 0; c < ncols; c++)  /* the last entry of an id wins, as in a dict */
            if (entries[c].col_id == id) e = &entries[c];
        if (!e) {
            Py_INCREF(Py_None);
            PyTuple_SET_ITEM(arrays, w, Py_None);
            continue;
        }
        int num = dtype_num(e->dtype_code);
        if (num < 0) { reason = "unknown dtype code"; goto refuse; }
        if (e->encoding == ENC_BITPACK) num = NPY_BOOL; /* whatever the code, as the reference */
        else if (e->encoding != ENC_CONST) {
            /* Check the payload can hold `count` values before allocating for them, so a damaged
             * count (however large) is refused, not allocated. */
            size_t stored = e->encoding == ENC_DELTA ? (count ? count - 1 : 0) : count;
            size_t len = (e->flags & FLAG_ZSTD) ? e->raw_len : e->stored_len;
            if (e->encoding > ENC_DELTA || (e->width != 1 && e->width != 2 && e->width != 4 &&
                                             e->width != 8) || len != e->width * stored) {
                reason = "payload cannot hold the values";
                goto refuse;
            }
        }
        npy_intp dims[1] = {(npy_intp)rows};
        PyObject *arr = PyArray_SimpleNew(1, dims, num);
        if (!arr) {
            if (!PyErr_ExceptionMatches(PyExc_MemoryError)) goto done;
            PyErr_Clear(); /* an absurd count: let the reference decide, as for any damage */
            reason = "cannot allocate the column";
            goto refuse;
        }
        PyTuple_SET_ITEM(arrays, w, arr);
        jobs[njobs].e = e;
        jobs[njobs].out = PyArray_DATA((PyArrayObject *)arr);
        jobs[njobs].count = count;
        jobs[njobs].rows = rows;
        njobs++;
        if (e->flags & FLAG_ZSTD) {
            has_zstd = 1;
            if (e->raw_len > scratch_len) scratch_len = e->raw_len;
        }
        work += e->stored_len + ((e->flags & FLAG_ZSTD) ? e->raw_len : 0);
    }
    if (has_zstd) {
        scratch = PyMem_RawMalloc(scratch_len ? scratch_len : 1);
        if (!scratch) { PyErr_NoMemory(); goto done; }
    }
    ZSTD_DCtx *dctx = has_zstd ? thread_dctx() : NULL;
    if (has_zstd && !dctx) { PyErr_NoMemory(); goto done; }
    {
        PyThreadState *ts = work >= GIL_RELEASE_BYTES ? PyEval_SaveThread() : NULL;
        for (size_t j = 0; j < njobs && !reason; j++)
            reason = decode_one(seg, &jobs[j], scratch, dctx);
        if (ts) PyEval_RestoreThread(ts);
    }
    if (reason) goto refuse;
    {
        PyObject *key = PyBytes_FromStringAndSize((const char *)seg + FIXED_SIZE, key_len);
        if (!key) goto done;
        result = Py_BuildValue("(NnLLO)", key, (Py_ssize_t)count, (long long)rd64(seg + 20),
                               (long long)rd64(seg + 28), arrays);
    }
    goto done;
refuse:
    result = PyUnicode_FromString(reason);
done:
    Py_XDECREF(arrays);
    PyMem_Free(entries);
    PyMem_Free(jobs);
    PyMem_RawFree(scratch);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"decode_segment", decode_segment, METH_VARARGS,
     "decode_segment(buf, col_ids: tuple[int, ...], rows: int) -> (key, count, min_ts, max_ts, "
     "arrays) or a reason string.\n\nVerifies the header and each asked-for column's CRC-32, "
     "decompresses and decodes the columns (the newest `rows` values of each; -1 = all) into "
     "new numpy arrays, aligned with col_ids (None where the segment lacks the column). "
     "Returns a short reason instead when the segment is damaged or unusual; the caller then "
     "runs the reference Python decoder for the exact error."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "native_decode",
                                    "Compiled segment decoder (docs/design/realtime.md).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_native_decode(void) {
    import_array();
    return PyModule_Create(&module);
}
