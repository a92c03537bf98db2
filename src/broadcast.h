/* Broadcast geometry of a binary op, shared by the CPU and CUDA backends (plain C, usable
 * from nvcc-compiled code): the output shape with size-1 axes dropped and adjacent axes
 * merged where both inputs walk them densely, and each input's element strides aligned to
 * it (0 on broadcast axes). */
#ifndef CG_BROADCAST_H
#define CG_BROADCAST_H

#include <stdint.h>
#include <string.h>

#include "cgrad/common.h"

typedef struct cg_bcast {
    int nd;
    int64_t n; /* output elements */
    int64_t shape[CG_MAX_DIMS];
    int64_t sa[CG_MAX_DIMS], sb[CG_MAX_DIMS];
} cg_bcast;

/* Strides of a contiguous (shape, ndim) tensor aligned to the trailing axes of oshape. */
static inline void cg_bcast_align(const int64_t *shape, int ndim, const int64_t *oshape, int nd, int64_t *s) {
    int off = nd - ndim;
    int64_t acc = 1;
    for (int d = nd - 1; d >= 0; d--) {
        if (d < off) {
            s[d] = 0;
            continue;
        }
        int64_t dim = shape[d - off];
        s[d] = (dim == 1 && oshape[d] != 1) ? 0 : acc;
        acc *= dim;
    }
}

static inline void cg_bcast_init(cg_bcast *it, const int64_t *oshape, int nd, const int64_t *ashape, int and_,
                                 const int64_t *bshape, int bnd) {
    int64_t sa[CG_MAX_DIMS], sb[CG_MAX_DIMS];
    cg_bcast_align(ashape, and_, oshape, nd, sa);
    cg_bcast_align(bshape, bnd, oshape, nd, sb);
    memset(it, 0, sizeof *it);
    it->n = 1;
    for (int d = 0; d < nd; d++) it->n *= oshape[d];
    for (int d = 0; d < nd; d++) {
        if (oshape[d] == 1) continue;
        int k = it->nd;
        if (k > 0 && it->sa[k - 1] == sa[d] * oshape[d] && it->sb[k - 1] == sb[d] * oshape[d]) {
            it->shape[k - 1] *= oshape[d]; /* merge into the previous axis */
            it->sa[k - 1] = sa[d];
            it->sb[k - 1] = sb[d];
            continue;
        }
        it->shape[k] = oshape[d];
        it->sa[k] = sa[d];
        it->sb[k] = sb[d];
        it->nd++;
    }
}

#endif
