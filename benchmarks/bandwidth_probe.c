/* Memory read bandwidth probe for benchmarks/bandwidth.py: each thread reads its slice of the buffer once,
 * folding it into four independent accumulators (so the loop is bound by loads, not by one add chain). */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct { const uint64_t *p; size_t n; uint64_t out; } job_t;

static void *read_slice(void *arg) {
    job_t *j = arg;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i + 8 <= j->n; i += 8) {
        a += j->p[i] ^ j->p[i + 4];
        b += j->p[i + 1] ^ j->p[i + 5];
        c += j->p[i + 2] ^ j->p[i + 6];
        d += j->p[i + 3] ^ j->p[i + 7];
    }
    j->out = a + b + c + d;   /* returned so the compiler cannot drop the loop */
    return NULL;
}

uint64_t read_pass(const uint64_t *buf, size_t n, int threads) {
    pthread_t t[64];
    job_t j[64];
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    size_t per = n / (size_t)threads;
    uint64_t sum = 0;
    for (int i = 0; i < threads; i++) {
        j[i].p = buf + (size_t)i * per; j[i].n = per;
        pthread_create(&t[i], NULL, read_slice, &j[i]);
    }
    for (int i = 0; i < threads; i++) { pthread_join(t[i], NULL); sum += j[i].out; }
    return sum;
}
