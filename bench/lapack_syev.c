/* LAPACK's symmetric eigensolvers at the size of abc-PSI's truncation on MNIST: the 54×54 Gram
 * matrix of a 500×54 factor L1 (f64), for comparison with faer's `self_adjoint_eigen` inside
 * `gram_svd` (`cargo bench --bench linalg`). Not part of the build or of CI.
 *
 *   apt-get install libopenblas-dev liblapacke-dev
 *   gcc -O2 bench/lapack_syev.c -o /tmp/lapack_syev -llapacke -lopenblas
 *   OPENBLAS_NUM_THREADS=1 /tmp/lapack_syev
 *
 * Prints the median of 400 calls of the Gram matrix (dsyrk) and of dsyevd, dsyevr and dsyev
 * (all eigenvectors), each on a fresh copy of the same Gram matrix. */
#include <cblas.h>
#include <lapacke.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

enum { M = 500, N = 54, REPS = 400 };

int main(void) {
    static double A[M * N], G[N * N], G0[N * N], w[N], Z[N * N], t[REPS];
    static lapack_int support[2 * N];
    /* Graded columns as in training: the first 27 (the old basis) large and decaying, the
     * augmented ones small. */
    srand(1);
    for (int i = 0; i < M * N; i++) {
        int col = i / M;
        A[i] = (rand() / (double)RAND_MAX - 0.5) * (col < 27 ? 10.0 / (1 + col) : 0.01);
    }
    cblas_dsyrk(CblasColMajor, CblasLower, CblasTrans, N, M, 1.0, A, M, 0.0, G0, N);
    const char *names[] = {"dsyrk (Gram 500x54)", "dsyevd", "dsyevr", "dsyev"};
    for (int alg = 0; alg < 4; alg++) {
        for (int r = 0; r < REPS; r++) {
            memcpy(G, G0, sizeof G);
            double start = now_us();
            lapack_int found;
            switch (alg) {
            case 0: cblas_dsyrk(CblasColMajor, CblasLower, CblasTrans, N, M, 1.0, A, M, 0.0, G, N); break;
            case 1: LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', N, G, N, w); break;
            case 2: LAPACKE_dsyevr(LAPACK_COL_MAJOR, 'V', 'A', 'L', N, G, N, 0, 0, 0, 0, 0.0, &found, w, Z, N, support); break;
            case 3: LAPACKE_dsyev(LAPACK_COL_MAJOR, 'V', 'L', N, G, N, w); break;
            }
            t[r] = now_us() - start;
        }
        qsort(t, REPS, sizeof t[0], by_value);
        printf("%-20s median %.1f us\n", names[alg], t[REPS / 2]);
    }
    return 0;
}
