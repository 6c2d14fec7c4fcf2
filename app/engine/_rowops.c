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

typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));

/* acc[0] + … + acc[15] in a fixed tree: lanes l and l + 8, then l + 4, l + 2, l + 1. Written
 * with vector halves so the compiler keeps it in registers (the same additions as a loop). */
AI float tree16(const float *acc) {
    v8 lo, hi;
    memcpy(&lo, acc, sizeof lo);
    memcpy(&hi, acc + 8, sizeof hi);
    v8 s8 = lo + hi;
    v4 a4, b4;
    memcpy(&a4, &s8, sizeof a4);
    memcpy(&b4, (const float *)&s8 + 4, sizeof b4);
    v4 s4 = a4 + b4;
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

/* Σ a[i]·b[i], i < n: 16 in-order partials, then the fixed tree. */
AI float dot16(const float *a, const float *b, int64_t n) {
    float acc[P] = {0};
    int64_t i = 0;
    for (; i + P <= n; i += P)
        for (int l = 0; l < P; l++) acc[l] = fmaf(a[i + l], b[i + l], acc[l]);
    for (; i < n; i++) acc[i % P] = fmaf(a[i], b[i], acc[i % P]);
    return tree16(acc);
}

/* e^x for x <= 0 (a score minus the row's max) in IEEE operations only, no libm: the loop over
 * a row's scores vectorizes and every ISA gets the same bits. x = n ln2 + r with |r| <= ln2/2
 * (ln2 in two parts, Cody-Waite), e^r by Cephes' polynomial (relative error ~1e-7), 2^n through
 * the exponent bits; below -87 it gives e^-87 (~1e-38, nothing beside the max's 1). */
AI float exp_neg(float x) {
    x = x < -87.0f ? -87.0f : x;
    float n = x * 1.44269504f + 12582912.0f; /* + 1.5 * 2^23 rounds x log2(e) to an integer */
    n = n - 12582912.0f;
    float r = fmaf(n, -0.693359375f, x);
    r = fmaf(n, 2.12194440e-4f, r);
    float p = fmaf(1.9875691500e-4f, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r) + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return p * two_n;
}

/* Σ s[j], j < n: 16 in-order partials, then the fixed tree. */
AI float sum16(const float *s, int64_t n) {
    float acc[P] = {0};
    int64_t i = 0;
    for (; i + P <= n; i += P)
        for (int l = 0; l < P; l++) acc[l] += s[i + l];
    for (; i < n; i++) acc[i % P] += s[i];
    return tree16(acc);
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
    float *kc, *vc, *out, *work;  /* caches (Hkv, cap, hd); out (t, H hd); work: see py_attention */
} Attn;

/* The query heads of one kv head (``group`` of them, rotated, side by side in q) against its
 * first n cached positions, into o (group heads side by side): each K and V row is read once
 * for the whole group. Every head's numbers come out as one head alone would get them. */
AI void attend_group(const Attn *a, const float *q, int64_t kv, int64_t group, int64_t n,
                     float *o) {
    const int64_t hd = a->hd;
    const float *K = a->kc + kv * a->cap * hd, *V = a->vc + kv * a->cap * hd;
    float *s = a->work, mx[group], inv[group]; /* scores: group rows of n */
    for (int64_t g = 0; g < group; g++) mx[g] = -INFINITY;
    for (int64_t j = 0; j < n; j++)
        for (int64_t g = 0; g < group; g++) {
            float v = s[g * n + j] = dot16(q + g * hd, K + j * hd, hd) * a->scale;
            mx[g] = v > mx[g] ? v : mx[g];
        }
    for (int64_t g = 0; g < group; g++) {
        float *sg = s + g * n;
        for (int64_t j = 0; j < n; j++) sg[j] = exp_neg(sg[j] - mx[g]);
        inv[g] = 1.0f / sum16(sg, n);
    }
    for (int64_t i = 0; i < group * hd; i++) o[i] = 0.0f;
    for (int64_t j = 0; j < n; j++)
        for (int64_t g = 0; g < group; g++) {
            float p = s[g * n + j] * inv[g];
            for (int64_t i = 0; i < hd; i++) o[g * hd + i] = fmaf(p, V[j * hd + i], o[g * hd + i]);
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
    float *q = a->work + group * (a->start + a->t); /* group heads of hd after the scores */
    for (int64_t r = 0; r < a->t; r++) { /* row r sees positions [0, start + r] */
        int64_t pos = a->start + r;
        const float *c = a->cos + pos * (hd / 2), *s = a->sin + pos * (hd / 2);
        for (int64_t kv = 0; kv < a->Hkv; kv++) {
            for (int64_t g = 0; g < group; g++)
                rope(a->qkv + r * w + (kv * group + g) * hd, c, s, hd, q + g * hd);
            attend_group(a, q, kv, group, pos + 1, a->out + (r * a->H + kv * group) * hd);
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
    a.work = ok ? malloc(sizeof(float) * (H / Hkv) * (start + t + hd)) : NULL; /* scores, q */
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
