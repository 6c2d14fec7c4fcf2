/* The engine's projection kernel: y = x @ W.T over weights kept in their stored (quantized)
 * form, batch-invariant by construction.
 *
 * Weights are packed by app/engine/qkernel.py into groups of 16 outputs (one per vector lane):
 *   F32: w[g][i][16]                  float32
 *   Q4 : q[g][I/8][16] uint32         dword l of a chunk holds lane l's 8 inputs, input 8c+k
 *                                      in bits 4k..4k+3 (one 64-byte load serves 8 inputs)
 *        d[g][I/32][16], m[g][I/32][16] f16: w = fma(q, d, m) (Q4_1; Q4_0 has m = -8d)
 *   Q8 : q[g][I][16] int8, d[g][I/32][16] f16: w = q * d (Q8_0)
 * The f16 scales are the file's own; widening f16 to float32 is exact on every path.
 * Every dequantized weight equals gguf's float32 dequantization bit for bit: d*q is exact in
 * float32 (an f16 scale times a 4- or 8-bit integer), so fma(q, d, m) and d*q + m round once, alike.
 *
 * The reduction: output o of row r is acc = 0; for i = 0 .. I-1: acc = fma(w[o][i], x[r][i], acc).
 * That sequence is the same whatever the number of rows, the tile a row lands in, or the path
 * (AVX-512, AVX2 + FMA, plain C with fmaf): a row of a T-row call is bit-identical to a one-row
 * call, and the three paths give the same bits. Tiles only decide which independent
 * accumulators share a loaded weight vector (rows) or run side by side (groups of outputs).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#define QK_X86 1
#include <immintrin.h>
#else
#define QK_X86 0
#endif

enum { FMT_F32 = 0, FMT_Q4 = 1, FMT_Q8 = 2 };
enum { ISA_C = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };
#define LANES 16
#define BLOCK 32

typedef struct {
    int fmt;
    const uint8_t *q; /* packed weights (float32 for F32) */
    const uint16_t *d, *m; /* IEEE half: the GGUF's own f16 scales, widened exactly */
    int64_t O, I, G, NB;
    const int64_t *gsel; /* NULL: every group; else compute groups gsel[0 .. G-1] only */
} QW;

/* Weights of the g-th computed group; its outputs go to columns g*16 … (all 16 lanes when
 * groups are selected: padding lanes hold zero weights). */
static inline int64_t wgroup(const QW *w, int64_t g) { return w->gsel ? w->gsel[g] : g; }
static inline int64_t lanes_out(const QW *w, int64_t g) {
    int64_t n = w->gsel ? LANES : w->O - g * LANES;
    return n < LANES ? n : LANES;
}

typedef struct {
    const float *x;
    int64_t T, ldx;
    float *y;
    int64_t ldy;
} Rows;

/* ---------------------------------------------------------------- plain C (fmaf) ------- */

/* IEEE half -> float, exactly (normals, subnormals, zeros, inf, NaN). */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 31, man = h & 0x3FF, bits;
    if (exp == 31) {
        bits = sign | 0x7F800000 | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else { /* subnormal: man · 2^-24, normalised */
        int e = -1;
        do man <<= 1, e++;
        while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3FF) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void dequant_c(const QW *w, int64_t g, int64_t i, float out[LANES]) {
    if (w->fmt == FMT_F32) {
        memcpy(out, (const float *)w->q + (g * w->I + i) * LANES, sizeof(float) * LANES);
        return;
    }
    const uint16_t *dh = w->d + (g * w->NB + i / BLOCK) * LANES;
    float d[LANES], m[LANES];
    for (int l = 0; l < LANES; l++) d[l] = half_to_float(dh[l]);
    if (w->fmt == FMT_Q8) {
        const int8_t *q = (const int8_t *)w->q + (g * w->I + i) * LANES;
        for (int l = 0; l < LANES; l++) out[l] = (float)q[l] * d[l];
        return;
    }
    const uint16_t *mh = w->m + (g * w->NB + i / BLOCK) * LANES;
    for (int l = 0; l < LANES; l++) m[l] = half_to_float(mh[l]);
    const uint8_t *q = w->q + (g * (w->I / 2) + i / 8 * 4) * LANES + (i % 8) / 2;
    int shift = (i & 1) ? 4 : 0;
    for (int l = 0; l < LANES; l++) out[l] = fmaf((float)((q[4 * l] >> shift) & 15), d[l], m[l]);
}

static void store_rows(const QW *w, int64_t g, const float *acc, float *y) {
    memcpy(y + g * LANES, acc, sizeof(float) * (size_t)lanes_out(w, g));
}

static void proj_c(const QW *w, const Rows *R) {
    float wv[LANES], acc[4][LANES];
    for (int64_t g = 0; g < w->G; g++) {
        for (int64_t r0 = 0; r0 < R->T; r0 += 4) {
            int rb = (int)(R->T - r0 < 4 ? R->T - r0 : 4);
            memset(acc, 0, sizeof(acc));
            for (int64_t i = 0; i < w->I; i++) {
                dequant_c(w, wgroup(w, g), i, wv);
                for (int r = 0; r < rb; r++) {
                    float xi = R->x[(r0 + r) * R->ldx + i];
                    for (int l = 0; l < LANES; l++) acc[r][l] = fmaf(wv[l], xi, acc[r][l]);
                }
            }
            for (int r = 0; r < rb; r++) store_rows(w, g, acc[r], R->y + (r0 + r) * R->ldy);
        }
    }
}

#if QK_X86
/* ---------------------------------------------------------------- AVX-512 -------------- */
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,fma")))
#define AI512 static inline __attribute__((always_inline)) T512

/* Two consecutive weights (inputs i, i+1; i even) of group g, as 16-lane vectors. */
AI512 void w2_512(const QW *w, int fmt, int64_t g, int64_t i, __m512 d, __m512 m, __m512 *w0,
                   __m512 *w1) {
    if (fmt == FMT_F32) {
        const float *p = (const float *)w->q + (g * w->I + i) * LANES;
        *w0 = _mm512_loadu_ps(p);
        *w1 = _mm512_loadu_ps(p + LANES);
    } else { /* FMT_Q8 */
        const int8_t *p = (const int8_t *)w->q + (g * w->I + i) * LANES;
        __m512i a = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p));
        __m512i b = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + LANES)));
        *w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(a), d);
        *w1 = _mm512_mul_ps(_mm512_cvtepi32_ps(b), d);
    }
}

/* Q4: inputs i … i+7 (one chunk) of gb groups into rb rows' accumulators. A nibble becomes its
 * float by a lane permute of the table 0 … 15 (vpermps reads an index's low 4 bits, so the
 * other nibbles in the dword need no masking): a shift and a permute per 16 weights. */
AI512 void chunk512_q4(const QW *w, const int64_t *gi, int gb, const float *x, int64_t ldx,
                       int rb, int64_t i, const __m512 *d, const __m512 *m, __m512 acc[4][4]) {
    const __m512 tbl = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i v[4];
    for (int g = 0; g < gb; g++)
        v[g] = _mm512_loadu_si512((const void *)(w->q + (gi[g] * (w->I / 2) + i / 2) * LANES));
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) {
        __m512 wk[4];
        for (int g = 0; g < gb; g++) {
            __m512i n = k ? _mm512_srli_epi32(v[g], 4 * k) : v[g];
            wk[g] = _mm512_fmadd_ps(_mm512_permutexvar_ps(n, tbl), d[g], m[g]);
        }
        for (int r = 0; r < rb; r++) {
            __m512 xk = _mm512_set1_ps(x[r * ldx + i + k]);
            for (int g = 0; g < gb; g++) acc[g][r] = _mm512_fmadd_ps(wk[g], xk, acc[g][r]);
        }
    }
}

/* Into L1 (measured a little faster than into L2 only, though a down projection's tile of 4
 * groups, 55 KB, outgrows L1). */
#define PF_HINT _MM_HINT_T0
/* While a tile works through its groups' block ``b``, the next ``gb`` groups' (the next tile's)
 * share of block b is asked into cache: by the tile's end the next tile's weights, values,
 * scales and mins, are on their way, so the loads overlap the arithmetic instead of waiting.
 * Selected groups are scattered, and Q8 (the head: twice the bytes per tile) measured slower
 * with it (1.35 -> 1.7 ms a dense head): both are left to the hardware. */
static inline __attribute__((always_inline)) void prefetch_next(const QW *w, int fmt, int64_t g0,
                                                                int gb, int64_t b) {
    if (w->gsel || g0 + gb >= w->G || fmt == FMT_Q8) return;
    int64_t half = fmt == FMT_F32 ? 8 : (fmt == FMT_Q8 ? 2 : 1); /* half-bytes per weight */
    int64_t qb = BLOCK * LANES * half / 2 * gb; /* the next tile's bytes per block */
    const char *q = (const char *)w->q + (g0 + gb) * w->I * LANES * half / 2 + b * qb;
    for (int64_t o = 0; o < qb; o += 64) _mm_prefetch(q + o, PF_HINT);
    if (fmt == FMT_F32) return;
    int64_t s = ((g0 + gb) * w->NB + b * gb) * LANES; /* halves: gb · 16 per block */
    for (int64_t o = 0; o < gb * LANES; o += 32) {
        _mm_prefetch((const char *)(w->d + s + o), PF_HINT);
        if (fmt == FMT_Q4) _mm_prefetch((const char *)(w->m + s + o), PF_HINT);
    }
}

/* gb groups × rb rows of outputs; gb, rb are constants at every call site (unrolled). */
AI512 void tile512(const QW *w, int fmt, const Rows *R, int64_t g0, int gb, int64_t r0, int rb) {
    __m512 acc[4][4], d[4], m[4], w0[4], w1[4];
    const float *x = R->x + r0 * R->ldx;
    int64_t gi[4];
    for (int g = 0; g < gb; g++) gi[g] = wgroup(w, g0 + g);
    for (int g = 0; g < gb; g++)
        for (int r = 0; r < rb; r++) acc[g][r] = _mm512_setzero_ps();
    for (int g = 0; g < gb; g++) d[g] = m[g] = _mm512_setzero_ps();
    for (int64_t i = 0; i + 1 < w->I; i += fmt == FMT_Q4 ? 8 : 2) {
        if (fmt != FMT_F32 && i % BLOCK == 0) {
            for (int g = 0; g < gb; g++) {
                int64_t s = (gi[g] * w->NB + i / BLOCK) * LANES;
                d[g] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w->d + s)));
                if (fmt == FMT_Q4)
                    m[g] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w->m + s)));
            }
            prefetch_next(w, fmt, g0, gb, i / BLOCK);
        }
        if (fmt == FMT_Q4) {
            chunk512_q4(w, gi, gb, x, R->ldx, rb, i, d, m, acc);
            continue;
        }
        for (int g = 0; g < gb; g++) w2_512(w, fmt, gi[g], i, d[g], m[g], &w0[g], &w1[g]);
        for (int r = 0; r < rb; r++) {
            __m512 xa = _mm512_set1_ps(x[r * R->ldx + i]);
            __m512 xb = _mm512_set1_ps(x[r * R->ldx + i + 1]);
            for (int g = 0; g < gb; g++) {
                acc[g][r] = _mm512_fmadd_ps(w0[g], xa, acc[g][r]);
                acc[g][r] = _mm512_fmadd_ps(w1[g], xb, acc[g][r]);
            }
        }
    }
    if (w->I & 1) { /* F32 only: quantized tensors have whole 32-blocks */
        int64_t i = w->I - 1;
        for (int g = 0; g < gb; g++) {
            __m512 wl = _mm512_loadu_ps((const float *)w->q + (gi[g] * w->I + i) * LANES);
            for (int r = 0; r < rb; r++)
                acc[g][r] = _mm512_fmadd_ps(wl, _mm512_set1_ps(x[r * R->ldx + i]), acc[g][r]);
        }
    }
    for (int g = 0; g < gb; g++) {
        int64_t n = lanes_out(w, g0 + g);
        __mmask16 k = n >= LANES ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
        for (int r = 0; r < rb; r++)
            _mm512_mask_storeu_ps(R->y + (r0 + r) * R->ldy + (g0 + g) * LANES, k, acc[g][r]);
    }
}

#define TILE512(GB)                                                                   \
    for (int64_t r0 = 0; r0 < R->T; r0 += 4) {                                        \
        switch (R->T - r0 < 4 ? (int)(R->T - r0) : 4) {                                \
        case 1: tile512(w, fmt, R, g0, GB, r0, 1); break;                             \
        case 2: tile512(w, fmt, R, g0, GB, r0, 2); break;                             \
        case 3: tile512(w, fmt, R, g0, GB, r0, 3); break;                             \
        default: tile512(w, fmt, R, g0, GB, r0, 4); break;                            \
        }                                                                             \
    }

/* Groups outermost: a group's weights are read from memory once and stay in L1 for every row
 * block; one-row calls run 4 groups side by side (4 independent FMA chains), more rows 2.
 * ``fmt`` is a constant at each call site, so each format gets its own loops. */
AI512 void run512(const QW *w, int fmt, const Rows *R) {
    int64_t g0 = 0;
    if (R->T == 1) {
        for (; g0 + 4 <= w->G; g0 += 4) tile512(w, fmt, R, g0, 4, 0, 1);
    } else {
        for (; g0 + 2 <= w->G; g0 += 2) TILE512(2)
    }
    for (; g0 < w->G; g0++) TILE512(1)
}

T512 static void proj_avx512(const QW *w, const Rows *R) {
    if (w->fmt == FMT_Q4) run512(w, FMT_Q4, R);
    else if (w->fmt == FMT_Q8) run512(w, FMT_Q8, R);
    else run512(w, FMT_F32, R);
}

/* ---------------------------------------------------------------- AVX2 + FMA ----------- */
#define T256 __attribute__((target("avx2,fma,f16c")))
#define AI256 static inline __attribute__((always_inline)) T256

/* Weight of input i, group g: lanes 0-7 in *a, 8-15 in *b. */
AI256 void w1_256(const QW *w, int fmt, int64_t g, int64_t i, const __m256 d[2],
                  const __m256 m[2], __m256 *a, __m256 *b) {
    if (fmt == FMT_F32) {
        const float *p = (const float *)w->q + (g * w->I + i) * LANES;
        *a = _mm256_loadu_ps(p);
        *b = _mm256_loadu_ps(p + 8);
    } else { /* FMT_Q8 */
        const int8_t *p = (const int8_t *)w->q + (g * w->I + i) * LANES;
        __m256i qa = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p));
        __m256i qb = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8)));
        *a = _mm256_mul_ps(_mm256_cvtepi32_ps(qa), d[0]);
        *b = _mm256_mul_ps(_mm256_cvtepi32_ps(qb), d[1]);
    }
}

/* Q4: inputs i … i+7 of gb groups (lanes 0-7's dwords, then 8-15's; input i+k's nibble at bit
 * 4k) into rb rows' accumulators. */
AI256 void chunk256_q4(const QW *w, const int64_t *gi, int gb, const float *x, int64_t ldx,
                       int rb, int64_t i, __m256 d[4][2], __m256 m[4][2], __m256 acc[4][4][2]) {
    const __m256i f = _mm256_set1_epi32(15);
    __m256i va[4], vb[4];
    for (int g = 0; g < gb; g++) {
        const uint8_t *p = w->q + (gi[g] * (w->I / 2) + i / 2) * LANES;
        va[g] = _mm256_loadu_si256((const __m256i *)p);
        vb[g] = _mm256_loadu_si256((const __m256i *)(p + 32));
    }
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) {
        for (int g = 0; g < gb; g++) {
            __m256i qa = _mm256_and_si256(_mm256_srli_epi32(va[g], 4 * k), f);
            __m256i qb = _mm256_and_si256(_mm256_srli_epi32(vb[g], 4 * k), f);
            __m256 a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(qa), d[g][0], m[g][0]);
            __m256 b = _mm256_fmadd_ps(_mm256_cvtepi32_ps(qb), d[g][1], m[g][1]);
            for (int r = 0; r < rb; r++) {
                __m256 xk = _mm256_set1_ps(x[r * ldx + i + k]);
                acc[g][r][0] = _mm256_fmadd_ps(a, xk, acc[g][r][0]);
                acc[g][r][1] = _mm256_fmadd_ps(b, xk, acc[g][r][1]);
            }
        }
    }
}

AI256 void tile256(const QW *w, int fmt, const Rows *R, int64_t g0, int gb, int64_t r0, int rb) {
    __m256 acc[4][4][2], d[4][2], m[4][2];
    const float *x = R->x + r0 * R->ldx;
    int64_t gi[4];
    for (int g = 0; g < gb; g++) gi[g] = wgroup(w, g0 + g);
    for (int g = 0; g < gb; g++) {
        d[g][0] = d[g][1] = m[g][0] = m[g][1] = _mm256_setzero_ps();
        for (int r = 0; r < rb; r++) acc[g][r][0] = acc[g][r][1] = _mm256_setzero_ps();
    }
    for (int64_t i = 0; i < w->I; i += fmt == FMT_Q4 ? 8 : 1) {
        if (fmt != FMT_F32 && i % BLOCK == 0) {
            prefetch_next(w, fmt, g0, gb, i / BLOCK);
            for (int g = 0; g < gb; g++) {
                int64_t s = (gi[g] * w->NB + i / BLOCK) * LANES;
                d[g][0] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w->d + s)));
                d[g][1] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w->d + s + 8)));
                if (fmt == FMT_Q4) {
                    m[g][0] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w->m + s)));
                    m[g][1] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w->m + s + 8)));
                }
            }
        }
        if (fmt == FMT_Q4) {
            chunk256_q4(w, gi, gb, x, R->ldx, rb, i, d, m, acc);
            continue;
        }
        for (int g = 0; g < gb; g++) {
            __m256 a, b;
            w1_256(w, fmt, gi[g], i, d[g], m[g], &a, &b);
            for (int r = 0; r < rb; r++) {
                __m256 xi = _mm256_set1_ps(x[r * R->ldx + i]);
                acc[g][r][0] = _mm256_fmadd_ps(a, xi, acc[g][r][0]);
                acc[g][r][1] = _mm256_fmadd_ps(b, xi, acc[g][r][1]);
            }
        }
    }
    for (int g = 0; g < gb; g++)
        for (int r = 0; r < rb; r++) {
            float tmp[LANES];
            _mm256_storeu_ps(tmp, acc[g][r][0]);
            _mm256_storeu_ps(tmp + 8, acc[g][r][1]);
            store_rows(w, g0 + g, tmp, R->y + (r0 + r) * R->ldy);
        }
}

AI256 void run256(const QW *w, int fmt, const Rows *R) {
    int64_t g0 = 0;
    if (R->T == 1)
        for (; g0 + 4 <= w->G; g0 += 4) tile256(w, fmt, R, g0, 4, 0, 1);
    for (; g0 < w->G; g0++) {
        for (int64_t r0 = 0; r0 < R->T; r0 += 4) {
            switch (R->T - r0 < 4 ? (int)(R->T - r0) : 4) {
            case 1: tile256(w, fmt, R, g0, 1, r0, 1); break;
            case 2: tile256(w, fmt, R, g0, 1, r0, 2); break;
            case 3: tile256(w, fmt, R, g0, 1, r0, 3); break;
            default: tile256(w, fmt, R, g0, 1, r0, 4); break;
            }
        }
    }
}

T256 static void proj_avx2(const QW *w, const Rows *R) {
    if (w->fmt == FMT_Q4) run256(w, FMT_Q4, R);
    else if (w->fmt == FMT_Q8) run256(w, FMT_Q8, R);
    else run256(w, FMT_F32, R);
}
#endif /* QK_X86 */

/* ---------------------------------------------------------------- dispatch ------------- */

static int best_isa(void) {
#if QK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
        return ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return ISA_AVX2;
#endif
    return ISA_C;
}

static int need(Py_buffer *b, const char *name, int64_t bytes) {
    if (b->len < bytes) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, the shapes need %lld", name, b->len,
                     (long long)bytes);
        return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- threads ------------- */
/* A call's output groups split into contiguous slices, one per thread: each output is still
 * computed by the same tile code with the same order of operations, so the result does not
 * depend on the thread count (only on which thread writes it). */
#define MAX_THREADS 8

typedef struct {
    QW w;
    Rows R;
    int isa;
} Job;

static void run_job(const Job *j) {
#if QK_X86
    if (j->isa == ISA_AVX512) proj_avx512(&j->w, &j->R);
    else if (j->isa == ISA_AVX2) proj_avx2(&j->w, &j->R);
    else
#endif
        proj_c(&j->w, &j->R);
}

static void *job_main(void *arg) {
    run_job((const Job *)arg);
    return NULL;
}

/* Groups [lo, hi) of ``w`` as a call of their own: weights, scales and outputs shifted. */
static Job slice(const QW *w, const Rows *R, int isa, int64_t lo, int64_t hi) {
    Job j = {*w, *R, isa};
    j.w.G = hi - lo;
    j.R.y += lo * LANES;
    if (w->gsel) {
        j.w.gsel = w->gsel + lo;
        return j;
    }
    int64_t qbytes = w->fmt == FMT_F32 ? w->I * 4 : (w->fmt == FMT_Q8 ? w->I : w->I / 2);
    j.w.q += lo * qbytes * LANES;
    if (w->fmt != FMT_F32) j.w.d += lo * w->NB * LANES;
    if (w->fmt == FMT_Q4) j.w.m += lo * w->NB * LANES;
    j.w.O -= lo * LANES;
    return j;
}

static void run_threads(const QW *w, const Rows *R, int isa, int threads) {
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > w->G) threads = (int)w->G;
    if (threads <= 1) {
        Job j = {*w, *R, isa};
        run_job(&j);
        return;
    }
    Job jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int t = 0; t < threads; t++)
        jobs[t] = slice(w, R, isa, w->G * t / threads, w->G * (t + 1) / threads);
    for (int t = 1; t < threads; t++) started[t] = !pthread_create(&tid[t], NULL, job_main, &jobs[t]);
    run_job(&jobs[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(tid[t], NULL);
        else run_job(&jobs[t]); /* no thread to be had: this one does the slice */
    }
}

/* proj(fmt, q, d, m, O, I, x, T, ldx, y, ldy, isa, groups[, threads]): y[r, :O] = x[r, :I] @
 * W.T for r < T; with a non-empty int64 ``groups``, only those groups of 16 outputs, side by side
 * in y; ``threads`` (default 1) split the output groups. Buffers are C-contiguous; d and m may be
 * empty where the format has none. */
static PyObject *py_proj(PyObject *self, PyObject *args) {
    int fmt, isa, threads = 1;
    long long O, I, T, ldx, ldy;
    Py_buffer q, d, m, x, y, gs;
    if (!PyArg_ParseTuple(args, "iy*y*y*LLy*LLw*Liy*|i", &fmt, &q, &d, &m, &O, &I, &x, &T, &ldx,
                          &y, &ldy, &isa, &gs, &threads))
        return NULL;
    QW w = {fmt, q.buf, d.buf, m.buf, O, I, (O + LANES - 1) / LANES, I / BLOCK, NULL};
    int64_t nsel = gs.len / 8, G_all = w.G;
    if (nsel > 0) w.gsel = gs.buf, w.G = nsel;
    Rows R = {x.buf, T, ldx, y.buf, ldy};
    int64_t per = fmt == FMT_F32 ? 4 : (fmt == FMT_Q8 ? 1 : 0);
    int ok = fmt >= FMT_F32 && fmt <= FMT_Q8 && O > 0 && I > 0 && T >= 0 && ldx >= I &&
             ldy >= (nsel > 0 ? nsel * LANES : O);
    if (!ok) PyErr_SetString(PyExc_ValueError, "proj: bad format or shape");
    if (ok && fmt != FMT_F32 && I % BLOCK) {
        PyErr_SetString(PyExc_ValueError, "proj: quantized inputs come in whole 32-blocks");
        ok = 0;
    }
    ok = ok && need(&q, "q", per ? G_all * I * LANES * per : G_all * (I / 2) * LANES);
    ok = ok && (fmt == FMT_F32 || need(&d, "d", G_all * w.NB * LANES * 2));
    ok = ok && (fmt != FMT_Q4 || need(&m, "m", G_all * w.NB * LANES * 2));
    ok = ok && (T == 0 || need(&x, "x", ((T - 1) * ldx + I) * 4));
    int64_t width = nsel > 0 ? nsel * LANES : O;
    ok = ok && (T == 0 || need(&y, "y", ((T - 1) * ldy + width) * 4));
    for (int64_t j = 0; ok && j < nsel; j++) {
        if (w.gsel[j] < 0 || w.gsel[j] >= G_all) {
            PyErr_SetString(PyExc_ValueError, "proj: a selected group is out of range");
            ok = 0;
        }
    }
    if (ok && (isa < 0 || isa > best_isa())) isa = best_isa();
    if (ok && T > 0) {
        Py_BEGIN_ALLOW_THREADS
        run_threads(&w, &R, isa, threads);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&q);
    PyBuffer_Release(&d);
    PyBuffer_Release(&m);
    PyBuffer_Release(&x);
    PyBuffer_Release(&y);
    PyBuffer_Release(&gs);
    if (!ok) return NULL;
    return PyLong_FromLong(isa);
}

static PyObject *py_best_isa(PyObject *self, PyObject *noargs) { return PyLong_FromLong(best_isa()); }

static PyMethodDef methods[] = {
    {"proj", py_proj, METH_VARARGS, "proj(fmt, q, d, m, O, I, x, T, ldx, y, ldy, isa, groups[, threads]) -> isa used"},
    {"best_isa", py_best_isa, METH_NOARGS, "the fastest path this CPU runs: 0 C, 1 AVX2, 2 AVX-512"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_qkernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__qkernel(void) { return PyModule_Create(&module); }
