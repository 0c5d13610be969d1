/*
 * arena: per-(tenant, model) vector storage and the exact top-C scan. It owns
 * the vectors, their int8 copies, the metadata and the rowid index; it does
 * no I/O and must not be touched off the loop thread. The hot loops are
 * compiled at -O3 with AVX-512/AVX2 clones whatever the build type, because
 * the scan is memory-bandwidth bound and the default build is unoptimised.
 */
#pragma GCC optimize("O3")

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "xmalloc.h"

/* int8 rows are padded to this many bytes so the scan has no tail loop. */
#define ARENA_PAD 64
/* Slack for float rounding in the scores the bound compares. */
#define ARENA_EPS 1e-4f

struct arena {
	unsigned dims, pdims;
	size_t n, cap;
	float *vec;			/* n × dims */
	uint8_t *q8;			/* n × pdims, int8 values + 128 (see arena_scan) */
	float *scale;			/* int8 → float per item */
	float *qerr;			/* |v − scale·q8| per item */
	struct arena_meta *meta;
	/* rowid → position: open addressing, linear probing, -1 empty. */
	int64_t *keys;
	uint32_t *vals;
	size_t mapcap;
	/* Scratch for a search, grown with n. */
	int32_t *dots;
	size_t last_rescored;
};

void
arena_filter_init(struct arena_filter *f)
{
	memset(f, 0, sizeof(*f));
	f->outcome = -2;
	f->min_confidence = -INFINITY;
	f->min_created_ms = INT64_MIN;
}

uint64_t
arena_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	h ^= h >> 31;
	h *= 0x94d049bb133111ebULL;
	h ^= h >> 29;
	return h;
}

struct arena *
arena_new(unsigned dims)
{
	struct arena *a = xcalloc(1, sizeof(*a));

	a->dims = dims;
	a->pdims = (dims + ARENA_PAD - 1) / ARENA_PAD * ARENA_PAD;
	a->mapcap = 64;
	a->keys = xmalloc(a->mapcap * sizeof(*a->keys));
	memset(a->keys, 0xff, a->mapcap * sizeof(*a->keys));
	a->vals = xmalloc(a->mapcap * sizeof(*a->vals));
	return a;
}

void
arena_free(struct arena *a)
{
	if (a == NULL)
		return;
	free(a->vec);
	free(a->q8);
	free(a->scale);
	free(a->qerr);
	free(a->meta);
	free(a->keys);
	free(a->vals);
	free(a->dots);
	free(a);
}

unsigned
arena_dims(const struct arena *a)
{
	return a->dims;
}

size_t
arena_count(const struct arena *a)
{
	return a->n;
}

const float *
arena_vec(const struct arena *a, uint32_t idx)
{
	return a->vec + (size_t)idx * a->dims;
}

size_t
arena_last_rescored(const struct arena *a)
{
	return a->last_rescored;
}

/* --- the rowid index --- */

static size_t
arena_slot(const struct arena *a, int64_t rowid)
{
	uint64_t h = (uint64_t)rowid * 0x9e3779b97f4a7c15ULL;

	return (size_t)(h >> 17) & (a->mapcap - 1);
}

static size_t
arena_find(const struct arena *a, int64_t rowid)
{
	size_t i = arena_slot(a, rowid);

	while (a->keys[i] != -1) {
		if (a->keys[i] == rowid)
			return i;
		i = (i + 1) & (a->mapcap - 1);
	}
	return (size_t)-1;
}

static void
arena_map_put(struct arena *a, int64_t rowid, uint32_t pos)
{
	size_t i;

	if ((a->n + 1) * 2 > a->mapcap) {
		int64_t *ok = a->keys;
		uint32_t *ov = a->vals;
		size_t ocap = a->mapcap;

		a->mapcap *= 2;
		a->keys = xmalloc(a->mapcap * sizeof(*a->keys));
		memset(a->keys, 0xff, a->mapcap * sizeof(*a->keys));
		a->vals = xmalloc(a->mapcap * sizeof(*a->vals));
		for (i = 0; i < ocap; i++) {
			size_t j;

			if (ok[i] == -1)
				continue;
			j = arena_slot(a, ok[i]);
			while (a->keys[j] != -1)
				j = (j + 1) & (a->mapcap - 1);
			a->keys[j] = ok[i];
			a->vals[j] = ov[i];
		}
		free(ok);
		free(ov);
	}
	i = arena_slot(a, rowid);
	while (a->keys[i] != -1 && a->keys[i] != rowid)
		i = (i + 1) & (a->mapcap - 1);
	a->keys[i] = rowid;
	a->vals[i] = pos;
}

/* Delete slot i with backward shifting, so probes never meet a tombstone. */
static void
arena_map_del(struct arena *a, size_t i)
{
	size_t j = i;

	for (;;) {
		size_t k;

		a->keys[i] = -1;
		for (;;) {
			j = (j + 1) & (a->mapcap - 1);
			if (a->keys[j] == -1)
				return;
			k = arena_slot(a, a->keys[j]);
			/* Move j back to i unless its home k lies cyclically in (i, j]. */
			if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
				continue;
			break;
		}
		a->keys[i] = a->keys[j];
		a->vals[i] = a->vals[j];
		i = j;
	}
}

/* --- vectors --- */

#define ARENA_QLANES 16

/*
 * Per-vector symmetric int8 quantisation. Written in independent lanes with
 * plain arithmetic (no libm calls, no float reductions the compiler may not
 * reorder) so it vectorises: start-up quantises every stored item.
 */
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
static void
arena_quantize(const float *v, unsigned dims, unsigned pdims, int8_t *q, float *scale,
	       float *err)
{
	float mxl[ARENA_QLANES] = { 0 }, el[ARENA_QLANES] = { 0 }, mx = 0.0f, s, inv, e = 0.0f;
	unsigned i, j, body = dims / ARENA_QLANES * ARENA_QLANES;

	for (i = 0; i < body; i += ARENA_QLANES)
		for (j = 0; j < ARENA_QLANES; j++) {
			float x = v[i + j] < 0 ? -v[i + j] : v[i + j];

			mxl[j] = x > mxl[j] ? x : mxl[j];
		}
	for (j = 0; j < ARENA_QLANES; j++)
		mx = mxl[j] > mx ? mxl[j] : mx;
	for (i = body; i < dims; i++) {
		float x = v[i] < 0 ? -v[i] : v[i];

		mx = x > mx ? x : mx;
	}
	s = mx > 0.0f ? mx / 127.0f : 1.0f;
	inv = 1.0f / s;
	for (i = 0; i < dims; i++) {
		float y = v[i] * inv;
		int r = (int)(y + (y >= 0.0f ? 0.5f : -0.5f));

		r = r > 127 ? 127 : r < -127 ? -127 : r;
		q[i] = (int8_t)r;
	}
	for (i = 0; i < body; i += ARENA_QLANES)
		for (j = 0; j < ARENA_QLANES; j++) {
			float d = v[i + j] - s * (float)q[i + j];

			el[j] += d * d;
		}
	for (i = body; i < dims; i++) {
		float d = v[i] - s * (float)q[i];

		e += d * d;
	}
	for (j = 0; j < ARENA_QLANES; j++)
		e += el[j];
	memset(q + dims, 0, pdims - dims);
	*scale = s;
	/* A relative margin for the rounding in e keeps the bound a bound. */
	*err = sqrtf(e) * 1.001f + 1e-6f;
}

#define ARENA_LANES 16

__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
float
arena_dot(const float *a, const float *b, unsigned dims)
{
	float acc[ARENA_LANES] = { 0 }, s = 0.0f;
	unsigned i = 0, j;

	/*
	 * Sixteen independent lanes summed in a fixed order at the end: the
	 * compiler vectorises it without reassociating anything, so the result
	 * is the same on every call (the brute force and the re-rank agree
	 * bit for bit) while running at SIMD speed.
	 */
	for (; i + ARENA_LANES <= dims; i += ARENA_LANES)
		for (j = 0; j < ARENA_LANES; j++)
			acc[j] += a[i + j] * b[i + j];
	for (; i < dims; i++)
		s += a[i] * b[i];
	for (j = 0; j < ARENA_LANES; j += 2)
		s += acc[j] + acc[j + 1];
	return s;
}

/*
 * The int8 scan: dots[r] = Σ row_r[i]·q[i] over int8 values. Rows are kept
 * offset by +128 (unsigned), the layout AVX-512 VNNI's vpdpbusd multiplies
 * (u8 × s8 → s32, 64 per instruction); Σ (x+128)·q = Σ x·q + 128·Σ q, so
 * 128·Σ q comes off at the end. The portable loop below computes the same
 * sums; both are exact integer arithmetic, so which one runs never changes
 * a result. Compiled auto-vectorisation of the portable loop runs at about
 * a quarter of vpdpbusd's speed, which made the 100k scan compute bound.
 */
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
static void
arena_scan_generic(const uint8_t *rows, const int8_t *q, size_t n, unsigned pdims,
		   int32_t qoff, int32_t *dots)
{
	for (size_t r = 0; r < n; r++) {
		const uint8_t *x = rows + r * pdims;
		int32_t s = 0;

		for (unsigned i = 0; i < pdims; i++)
			s += (int32_t)x[i] * (int32_t)q[i];
		dots[r] = s - qoff;
	}
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void
arena_scan_vnni(const uint8_t *rows, const int8_t *q, size_t n, unsigned pdims,
		int32_t qoff, int32_t *dots)
{
	/* pdims is a multiple of ARENA_PAD (64): whole zmm loads, no tail. */
	for (size_t r = 0; r < n; r++) {
		const uint8_t *x = rows + r * pdims;
		__m512i acc = _mm512_setzero_si512();

		for (unsigned i = 0; i < pdims; i += 64)
			acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(x + i),
						  _mm512_loadu_si512(q + i));
		dots[r] = _mm512_reduce_add_epi32(acc) - qoff;
	}
}

static void
arena_scan_i8(const uint8_t *rows, const int8_t *q, size_t n, unsigned pdims, int32_t *dots)
{
	static int vnni = -1;
	int32_t qoff = 0;

	for (unsigned i = 0; i < pdims; i++)
		qoff += 128 * (int32_t)q[i];
	if (vnni < 0) {
		__builtin_cpu_init();
		vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
	}
	if (vnni && ARENA_PAD % 64 == 0)
		arena_scan_vnni(rows, q, n, pdims, qoff, dots);
	else
		arena_scan_generic(rows, q, n, pdims, qoff, dots);
}

void
arena_add(struct arena *a, const struct arena_meta *meta, const float *vec)
{
	size_t slot = arena_find(a, meta->rowid);
	size_t pos;
	float *v;

	if (slot != (size_t)-1) {
		pos = a->vals[slot];
	} else {
		if (a->n == a->cap) {
			a->cap = a->cap ? a->cap * 2 : 64;
			a->vec = xreallocarray(a->vec, a->cap, a->dims * sizeof(float));
			a->q8 = xreallocarray(a->q8, a->cap, a->pdims);
			a->scale = xreallocarray(a->scale, a->cap, sizeof(float));
			a->qerr = xreallocarray(a->qerr, a->cap, sizeof(float));
			a->meta = xreallocarray(a->meta, a->cap, sizeof(*a->meta));
			a->dots = xreallocarray(a->dots, a->cap, sizeof(int32_t));
		}
		pos = a->n;
		arena_map_put(a, meta->rowid, (uint32_t)pos);
		a->n++;
	}
	v = a->vec + pos * a->dims;
	memcpy(v, vec, a->dims * sizeof(float));
	{
		float s = arena_dot(v, v, a->dims);

		/* Stored vectors are unit already; renormalise only what is off. */
		if (s > 0.0f && fabsf(s - 1.0f) > 1e-6f) {
			float inv = 1.0f / sqrtf(s);

			for (unsigned i = 0; i < a->dims; i++)
				v[i] *= inv;
		}
	}
	{
		int8_t *t = xmalloc(a->pdims);
		uint8_t *row = a->q8 + pos * a->pdims;

		arena_quantize(v, a->dims, a->pdims, t, &a->scale[pos], &a->qerr[pos]);
		for (unsigned i = 0; i < a->pdims; i++)
			row[i] = (uint8_t)(t[i] + 128);
		free(t);
	}
	a->meta[pos] = *meta;
}

bool
arena_remove(struct arena *a, int64_t rowid)
{
	size_t slot = arena_find(a, rowid), pos, last;

	if (slot == (size_t)-1)
		return false;
	pos = a->vals[slot];
	arena_map_del(a, slot);
	last = a->n - 1;
	if (pos != last) {
		/* Swap the last item into the hole and repoint its index entry. */
		memcpy(a->vec + pos * a->dims, a->vec + last * a->dims, a->dims * sizeof(float));
		memcpy(a->q8 + pos * a->pdims, a->q8 + last * a->pdims, a->pdims);
		a->scale[pos] = a->scale[last];
		a->qerr[pos] = a->qerr[last];
		a->meta[pos] = a->meta[last];
		a->vals[arena_find(a, a->meta[pos].rowid)] = (uint32_t)pos;
	}
	a->n--;
	return true;
}

struct arena_meta *
arena_get(struct arena *a, int64_t rowid, const float **vec)
{
	size_t slot = arena_find(a, rowid);

	if (slot == (size_t)-1)
		return NULL;
	if (vec != NULL)
		*vec = a->vec + (size_t)a->vals[slot] * a->dims;
	return &a->meta[a->vals[slot]];
}

/* --- search --- */

bool
arena_filter_pass(const struct arena_meta *m, const struct arena_filter *f)
{
	if (f->has_ns && m->ns != f->ns)
		return false;
	if (f->has_domain && m->domain != f->domain)
		return false;
	if (f->outcome != -2 && m->outcome != f->outcome)
		return false;
	if (m->confidence < f->min_confidence)
		return false;
	if (m->created_ms < f->min_created_ms)
		return false;
	for (unsigned t = 0; t < f->ntags; t++) {
		unsigned j;

		for (j = 0; j < m->ntags; j++)
			if (m->tags[j] == f->tags[t])
				break;
		if (j == m->ntags)
			return false;
	}
	return true;
}

/* Order: higher sim first, then lower rowid, so ties resolve the same everywhere. */
static bool
arena_better(const struct arena_hit *x, const struct arena_hit *y)
{
	if (x->sim != y->sim)
		return x->sim > y->sim;
	return x->rowid < y->rowid;
}

/* A min-heap of the best c hits: h[0] is the worst kept. */
struct arena_heap {
	struct arena_hit *h;
	size_t n, c;
};

static void
arena_heap_sift_down(struct arena_heap *hp, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, w = i;
		struct arena_hit t;

		if (l < hp->n && arena_better(&hp->h[w], &hp->h[l]))
			w = l;
		if (r < hp->n && arena_better(&hp->h[w], &hp->h[r]))
			w = r;
		if (w == i)
			return;
		t = hp->h[i];
		hp->h[i] = hp->h[w];
		hp->h[w] = t;
		i = w;
	}
}

static void
arena_heap_push(struct arena_heap *hp, const struct arena_hit *x)
{
	size_t i;

	if (hp->n < hp->c) {
		i = hp->n++;
		hp->h[i] = *x;
		while (i > 0) {
			size_t p = (i - 1) / 2;
			struct arena_hit t;

			if (!arena_better(&hp->h[p], &hp->h[i]))
				break;
			t = hp->h[p];
			hp->h[p] = hp->h[i];
			hp->h[i] = t;
			i = p;
		}
		return;
	}
	if (!arena_better(x, &hp->h[0]))
		return;
	hp->h[0] = *x;
	arena_heap_sift_down(hp, 0);
}

static int
arena_hit_cmp(const void *a, const void *b)
{
	const struct arena_hit *x = a, *y = b;

	if (arena_better(x, y))
		return -1;
	if (arena_better(y, x))
		return 1;
	return 0;
}

static int
arena_idx_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

size_t
arena_brute(struct arena *a, const float *q, const struct arena_filter *f, size_t c,
	    struct arena_hit *out)
{
	struct arena_heap hp = { out, 0, c };

	if (c == 0)
		return 0;
	for (size_t i = 0; i < a->n; i++) {
		struct arena_hit h;

		if (!arena_filter_pass(&a->meta[i], f))
			continue;
		h.rowid = a->meta[i].rowid;
		h.idx = (uint32_t)i;
		h.sim = arena_dot(a->vec + i * a->dims, q, a->dims);
		arena_heap_push(&hp, &h);
	}
	qsort(out, hp.n, sizeof(*out), arena_hit_cmp);
	return hp.n;
}

size_t
arena_search(struct arena *a, const float *q, const struct arena_filter *f, size_t c,
	     size_t exact_k, struct arena_hit *out)
{
	struct arena_heap approx, best;
	int8_t *qq;
	float qscale, qerr, thresh;
	uint32_t *done;
	size_t i, ndone;

	a->last_rescored = 0;
	if (c == 0 || a->n == 0)
		return 0;
	qq = xmalloc(a->pdims);
	arena_quantize(q, a->dims, a->pdims, qq, &qscale, &qerr);
	arena_scan_i8(a->q8, qq, a->n, a->pdims, a->dots);
	free(qq);

	/* Pass 1: the top c by int8 score among the items the filter lets through. */
	approx.h = xmalloc(c * sizeof(*approx.h));
	approx.n = 0;
	approx.c = c;
	for (i = 0; i < a->n; i++) {
		struct arena_hit h;

		h.sim = (float)a->dots[i] * a->scale[i] * qscale;
		/*
		 * Most items cannot enter a full heap: decide that before touching
		 * their metadata, which is the larger read (equal scores go on to
		 * the rowid tie-break).
		 */
		if (approx.n == c && h.sim < approx.h[0].sim)
			continue;
		if (!arena_filter_pass(&a->meta[i], f))
			continue;
		h.rowid = a->meta[i].rowid;
		h.idx = (uint32_t)i;
		arena_heap_push(&approx, &h);
	}
	/* Pass 2: re-score them in float32. */
	best.h = out;
	best.n = 0;
	best.c = c;
	done = xmalloc((approx.n ? approx.n : 1) * sizeof(*done));
	for (i = 0; i < approx.n; i++) {
		struct arena_hit h = approx.h[i];

		h.sim = arena_dot(a->vec + (size_t)h.idx * a->dims, q, a->dims);
		arena_heap_push(&best, &h);
		done[i] = h.idx;
	}
	ndone = approx.n;
	a->last_rescored = ndone;
	free(approx.h);

	/*
	 * Pass 3 (exact_k): |v·q − s_v·s_q·(q8_v·q8_q)| ≤ |e_v| + |v̂|·|e_q|
	 * with |v̂| ≤ 1 + |e_v|. Any item whose int8 score plus that bound
	 * reaches the exact_k-th float32 score might belong to the top
	 * exact_k: re-score it. When fewer than c items passed the filter,
	 * all of them were re-scored already.
	 */
	if (exact_k > c)
		exact_k = c;
	if (exact_k > 0 && best.n == c) {
		struct arena_heap top = { NULL, 0, exact_k };
		struct arena_hit tmp[ARENA_MAX_EXACT];

		/* The exact_k best so far, as their own min-heap: its root is the bar. */
		top.h = tmp;
		for (i = 0; i < best.n; i++)
			arena_heap_push(&top, &best.h[i]);
		qsort(done, ndone, sizeof(*done), arena_idx_cmp);
		for (i = 0; i < a->n; i++) {
			float approx_sim, bound;
			struct arena_hit h;

			thresh = top.h[0].sim;
			approx_sim = (float)a->dots[i] * a->scale[i] * qscale;
			bound = a->qerr[i] + (1.0f + a->qerr[i]) * qerr + ARENA_EPS;
			if (approx_sim + bound < thresh)
				continue;
			if (!arena_filter_pass(&a->meta[i], f))
				continue;
			h.idx = (uint32_t)i;
			if (bsearch(&h.idx, done, ndone, sizeof(*done), arena_idx_cmp) != NULL)
				continue;
			h.rowid = a->meta[i].rowid;
			h.sim = arena_dot(a->vec + i * a->dims, q, a->dims);
			arena_heap_push(&top, &h);
			arena_heap_push(&best, &h);
			a->last_rescored++;
		}
	}
	free(done);
	qsort(out, best.n, sizeof(*out), arena_hit_cmp);
	return best.n;
}
