/* FastCDC 2020 content-defined chunking: the cut-point kernel.
 *
 * Pure C, no Python, no allocation: the Cython driver (_chunker.pyx) calls it with the GIL
 * released. Parameters and cut points follow the FastCDC 2020 paper ("rolling two bytes",
 * normalized chunking) exactly as fastcdc-rs v2020 and pyfastcdc do, so a chunk boundary here
 * is a chunk boundary there. Cut points are part of the on-disk contract (dedup of every
 * existing store depends on them) and are pinned by tests/unit/test_chunker_golden.py.
 */
#ifndef WORMFS_FASTCDC_H
#define WORMFS_FASTCDC_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t min_size;
    uint32_t avg_size;
    uint32_t max_size;
    uint64_t mask_s;     /* harder mask, used below avg_size (normalized chunking) */
    uint64_t mask_l;     /* easier mask, used from avg_size up to max_size */
    uint64_t mask_s_ls;  /* mask_s << 1, checked after the first byte of each pair */
    uint64_t mask_l_ls;
} wormfs_cdc_params;

/* Fill *p. Returns 0, or -1 if the sizes are out of range (see fastcdc.c). */
int wormfs_cdc_init(wormfs_cdc_params *p, uint32_t min_size, uint32_t avg_size,
                    uint32_t max_size, int normalization);

/* Length of the first chunk of buf[0:len]. The caller must pass at least max_size bytes unless
 * buf holds the end of the stream: the answer depends only on buf[0:min(len, max_size)]. */
size_t wormfs_cdc_cut(const wormfs_cdc_params *p, const uint8_t *buf, size_t len);

#endif
