/* Memory read bandwidth probe for benchmarks/bandwidth.py: each thread reads its slice of the buffer once, 64 bytes
 * per load into four independent vector accumulators (GCC/Clang vector extensions; with -march=native these are
 * AVX-512 / AVX2 / NEON loads, as the inference kernels use), so the loop is bound by memory, not by the core. */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef uint64_t v8 __attribute__((vector_size(64)));
typedef struct { const v8 *p; size_t n; uint64_t out; } job_t;

static void *read_slice(void *arg) {
    job_t *j = arg;
    v8 a = {0}, b = {0}, c = {0}, d = {0};
    for (size_t i = 0; i + 4 <= j->n; i += 4) {
        a ^= j->p[i];
        b ^= j->p[i + 1];
        c ^= j->p[i + 2];
        d ^= j->p[i + 3];
    }
    v8 s = a ^ b ^ c ^ d;
    uint64_t o = 0;
    for (int k = 0; k < 8; k++) o ^= s[k];
    j->out = o;   /* returned so the compiler cannot drop the loop */
    return NULL;
}

/* buf: n uint64 words, 64-byte aligned; reads n / 8 64-byte vectors split over `threads` threads. */
uint64_t read_pass(const uint64_t *buf, size_t n, int threads) {
    pthread_t t[64];
    job_t j[64];
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    size_t per = (n / 8) / (size_t)threads;
    uint64_t sum = 0;
    for (int i = 0; i < threads; i++) {
        j[i].p = (const v8 *)buf + (size_t)i * per;
        j[i].n = per;
        pthread_create(&t[i], NULL, read_slice, &j[i]);
    }
    for (int i = 0; i < threads; i++) { pthread_join(t[i], NULL); sum += j[i].out; }
    return sum;
}
