/* The body's row-wise operations, one C call per layer step instead of dozens of numpy calls:
 * RMSNorm, RoPE + KV-cache write + causal grouped-query attention, and the SiLU gate.
 *
 * Every result of a row depends on that row (and the cache keys it sees) only, computed in one
 * fixed order: a T-row call gives each row what a one-row call gives it. Reductions keep 16
 * partial sums (element i into partial i % 16, in index order, with fmaf) and add them in a
 * fixed tree. The same source is compiled three times (AVX-512, AVX2 + FMA, baseline, picked at
 * run time): the same IEEE operations in the same order, so the same bits; expf and sqrtf are
 * libm's, one implementation per machine.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define P 16
#define AI static inline __attribute__((always_inline))

/* Σ a[i]·b[i], i < n: 16 in-order partials, then a fixed tree. */
AI float dot16(const float *a, const float *b, int64_t n) {
    float acc[P] = {0};
    int64_t i = 0;
    for (; i + P <= n; i += P)
        for (int l = 0; l < P; l++) acc[l] = fmaf(a[i + l], b[i + l], acc[l]);
    for (; i < n; i++) acc[i % P] = fmaf(a[i], b[i], acc[i % P]);
    for (int s = P / 2; s > 0; s /= 2)
        for (int l = 0; l < s; l++) acc[l] += acc[l + s];
    return acc[0];
}

AI void rmsnorm_body(const float *x, const float *g, float eps, int64_t n, int64_t d, float *y) {
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * d;
        float inv = 1.0f / sqrtf(dot16(xr, xr, d) / (float)d + eps);
        for (int64_t i = 0; i < d; i++) y[r * d + i] = xr[i] * inv * g[i];
    }
}

AI void silu_body(const float *gu, int64_t n, int64_t f, float *y) {
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < f; i++) {
            float gate = gu[r * 2 * f + i], up = gu[r * 2 * f + f + i];
            y[r * f + i] = gate / (1.0f + expf(-gate)) * up;
        }
}

/* Adjacent pairs (2i, 2i+1) of one head rotated by cos/sin (hd/2,). */
AI void rope(const float *x, const float *c, const float *s, int64_t hd, float *y) {
    for (int64_t i = 0; i < hd / 2; i++) {
        float x0 = x[2 * i], x1 = x[2 * i + 1];
        y[2 * i] = x0 * c[i] - x1 * s[i];
        y[2 * i + 1] = x0 * s[i] + x1 * c[i];
    }
}

typedef struct {
    int64_t t, start, H, Hkv, hd, cap;
    float scale;
    const float *qkv, *cos, *sin; /* qkv (t, (H + 2 Hkv) hd); tables (start + t, hd/2) */
    float *kc, *vc, *out, *work;  /* caches (Hkv, cap, hd); out (t, H hd); work: n + hd floats */
} Attn;

/* One query head (already rotated) against the first n cached positions of kv head kv. */
AI void attend_one(const Attn *a, const float *q, int64_t kv, int64_t n, float *o) {
    const float *K = a->kc + kv * a->cap * a->hd, *V = a->vc + kv * a->cap * a->hd;
    float *s = a->work, mx = -INFINITY, sum = 0.0f;
    for (int64_t j = 0; j < n; j++) {
        s[j] = dot16(q, K + j * a->hd, a->hd) * a->scale;
        mx = s[j] > mx ? s[j] : mx;
    }
    for (int64_t j = 0; j < n; j++) sum += (s[j] = expf(s[j] - mx));
    float inv = 1.0f / sum;
    for (int64_t i = 0; i < a->hd; i++) o[i] = 0.0f;
    for (int64_t j = 0; j < n; j++) {
        float p = s[j] * inv;
        for (int64_t i = 0; i < a->hd; i++) o[i] = fmaf(p, V[j * a->hd + i], o[i]);
    }
}

AI void attention_body(const Attn *a) {
    int64_t hd = a->hd, w = (a->H + 2 * a->Hkv) * hd, group = a->H / a->Hkv;
    for (int64_t r = 0; r < a->t; r++) { /* every new key and value into the cache first */
        int64_t pos = a->start + r;
        const float *c = a->cos + pos * (hd / 2), *s = a->sin + pos * (hd / 2);
        for (int64_t kv = 0; kv < a->Hkv; kv++) {
            const float *k = a->qkv + r * w + (a->H + kv) * hd;
            rope(k, c, s, hd, a->kc + (kv * a->cap + pos) * hd);
            memcpy(a->vc + (kv * a->cap + pos) * hd, k + a->Hkv * hd, sizeof(float) * hd);
        }
    }
    float *q = a->work + a->start + a->t; /* hd floats after the scores */
    for (int64_t r = 0; r < a->t; r++) { /* row r sees positions [0, start + r] */
        int64_t pos = a->start + r;
        for (int64_t h = 0; h < a->H; h++) {
            rope(a->qkv + r * w + h * hd, a->cos + pos * (hd / 2), a->sin + pos * (hd / 2), hd, q);
            attend_one(a, q, h / group, pos + 1, a->out + r * a->H * hd + h * hd);
        }
    }
}

#if defined(__x86_64__)
#define CLONE(name, args, call)                                                                 \
    __attribute__((target("avx512f,avx512vl,fma"))) static void name##_avx512 args { call; }   \
    __attribute__((target("avx2,fma"))) static void name##_avx2 args { call; }                 \
    static void name##_c args { call; }
#else
#define CLONE(name, args, call)                                                                 \
    static void name##_c args { call; }                                                         \
    static void name##_avx2 args { call; }                                                      \
    static void name##_avx512 args { call; }
#endif

CLONE(rmsnorm, (const float *x, const float *g, float eps, int64_t n, int64_t d, float *y),
      rmsnorm_body(x, g, eps, n, d, y))
CLONE(silu, (const float *gu, int64_t n, int64_t f, float *y), silu_body(gu, n, f, y))
CLONE(attention, (const Attn *a), attention_body(a))

static int isa_of(int forced) {
    int best = 0;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = 1;
    if (best && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) best = 2;
#endif
    return forced < 0 || forced > best ? best : forced;
}

static int sized(Py_buffer *b, int64_t floats, const char *name) {
    if (b->len < floats * 4) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, the shapes need %lld", name, b->len,
                     (long long)floats * 4);
        return 0;
    }
    return 1;
}

#define RELEASE(...)                                                                           \
    do {                                                                                       \
        Py_buffer *bs[] = {__VA_ARGS__};                                                       \
        for (size_t k = 0; k < sizeof(bs) / sizeof(bs[0]); k++) PyBuffer_Release(bs[k]);       \
    } while (0)

/* rmsnorm(x, g, eps, n, d, y, isa) */
static PyObject *py_rmsnorm(PyObject *self, PyObject *args) {
    Py_buffer x, g, y;
    float eps;
    long long n, d;
    int isa;
    if (!PyArg_ParseTuple(args, "y*y*fLLw*i", &x, &g, &eps, &n, &d, &y, &isa)) return NULL;
    int ok = n >= 0 && d > 0 && sized(&x, n * d, "x") && sized(&g, d, "g") && sized(&y, n * d, "y");
    if (ok) {
        isa = isa_of(isa);
        Py_BEGIN_ALLOW_THREADS
        (isa == 2 ? rmsnorm_avx512 : isa == 1 ? rmsnorm_avx2 : rmsnorm_c)(x.buf, g.buf, eps, n, d,
                                                                           y.buf);
        Py_END_ALLOW_THREADS
    }
    RELEASE(&x, &g, &y);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* silu(gu, n, f, y, isa): y = gate / (1 + exp(-gate)) * up, gu = [gate | up] (n, 2f) */
static PyObject *py_silu(PyObject *self, PyObject *args) {
    Py_buffer gu, y;
    long long n, f;
    int isa;
    if (!PyArg_ParseTuple(args, "y*LLw*i", &gu, &n, &f, &y, &isa)) return NULL;
    int ok = n >= 0 && f > 0 && sized(&gu, 2 * n * f, "gu") && sized(&y, n * f, "y");
    if (ok) {
        isa = isa_of(isa);
        Py_BEGIN_ALLOW_THREADS
        (isa == 2 ? silu_avx512 : isa == 1 ? silu_avx2 : silu_c)(gu.buf, n, f, y.buf);
        Py_END_ALLOW_THREADS
    }
    RELEASE(&gu, &y);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* attention(qkv, t, start, H, Hkv, hd, scale, cos, sin, kc, vc, cap, out, isa) */
static PyObject *py_attention(PyObject *self, PyObject *args) {
    Py_buffer qkv, cs, sn, kc, vc, out;
    Attn a;
    int isa;
    long long t, start, H, Hkv, hd, cap;
    if (!PyArg_ParseTuple(args, "y*LLLLLfy*y*w*w*Lw*i", &qkv, &t, &start, &H, &Hkv, &hd, &a.scale,
                          &cs, &sn, &kc, &vc, &cap, &out, &isa))
        return NULL;
    a.t = t, a.start = start, a.H = H, a.Hkv = Hkv, a.hd = hd, a.cap = cap;
    int ok = t >= 0 && start >= 0 && Hkv > 0 && H % Hkv == 0 && hd > 0 && hd % 2 == 0 &&
             start + t <= cap;
    if (!ok) PyErr_SetString(PyExc_ValueError, "attention: bad shape");
    ok = ok && sized(&qkv, t * (H + 2 * Hkv) * hd, "qkv") && sized(&out, t * H * hd, "out");
    ok = ok && sized(&cs, (start + t) * hd / 2, "cos") && sized(&sn, (start + t) * hd / 2, "sin");
    ok = ok && sized(&kc, Hkv * cap * hd, "k cache") && sized(&vc, Hkv * cap * hd, "v cache");
    a.work = ok ? malloc(sizeof(float) * (start + t + hd)) : NULL;
    if (ok && !a.work) ok = 0, PyErr_NoMemory();
    if (ok && t > 0) {
        a.qkv = qkv.buf, a.cos = cs.buf, a.sin = sn.buf, a.kc = kc.buf, a.vc = vc.buf;
        a.out = out.buf;
        isa = isa_of(isa);
        Py_BEGIN_ALLOW_THREADS
        (isa == 2 ? attention_avx512 : isa == 1 ? attention_avx2 : attention_c)(&a);
        Py_END_ALLOW_THREADS
    }
    free(a.work);
    RELEASE(&qkv, &cs, &sn, &kc, &vc, &out);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"rmsnorm", py_rmsnorm, METH_VARARGS, "rmsnorm(x, g, eps, n, d, y, isa)"},
    {"silu", py_silu, METH_VARARGS, "silu(gu, n, f, y, isa)"},
    {"attention", py_attention, METH_VARARGS,
     "attention(qkv, t, start, H, Hkv, hd, scale, cos, sin, kc, vc, cap, out, isa)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rowops", NULL, -1, methods};

PyMODINIT_FUNC PyInit__rowops(void) { return PyModule_Create(&module); }
