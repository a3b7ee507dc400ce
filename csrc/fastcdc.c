/* FastCDC 2020 cut-point kernel; see fastcdc.h for the contract. */
#include "fastcdc.h"
#include "gear_table.h"

/* Masks of the reference implementation, indexed by log2 of the target size; a mask with more
 * one-bits makes a cut rarer. Never change: cut points depend on them. */
static const uint64_t MASKS[26] = {
    0, 0, 0, 0, 0,
    0x0000000001804110ULL, /* unused except for normalization level 3 */
    0x0000000001803110ULL, /* 64 B */
    0x0000000018035100ULL, /* 128 B */
    0x0000001800035300ULL, /* 256 B */
    0x0000019000353000ULL, /* 512 B */
    0x0000590003530000ULL, /* 1 KiB */
    0x0000d90003530000ULL, /* 2 KiB */
    0x0000d90103530000ULL, /* 4 KiB */
    0x0000d90303530000ULL, /* 8 KiB */
    0x0000d90313530000ULL, /* 16 KiB */
    0x0000d90f03530000ULL, /* 32 KiB */
    0x0000d90303537000ULL, /* 64 KiB */
    0x0000d90703537000ULL, /* 128 KiB */
    0x0000d90707537000ULL, /* 256 KiB */
    0x0000d91707537000ULL, /* 512 KiB */
    0x0000d91747537000ULL, /* 1 MiB */
    0x0000d91767537000ULL, /* 2 MiB */
    0x0000d93767537000ULL, /* 4 MiB */
    0x0000d93777537000ULL, /* 8 MiB */
    0x0000d93777577000ULL, /* 16 MiB */
    0x0000db3777577000ULL, /* unused except for normalization level 3 */
};

static unsigned log2_round(uint32_t v)
{
    /* round(log2(v)) as the reference does: 2^k * sqrt(2) is the rounding boundary. */
    unsigned bits = 0;
    while ((1ULL << (bits + 1)) <= v)
        bits++;
    /* v in [2^bits, 2^(bits+1)); compare v^2 with 2^(2*bits+1). */
    if ((uint64_t)v * v >= (1ULL << (2 * bits + 1)))
        bits++;
    return bits;
}

int wormfs_cdc_init(wormfs_cdc_params *p, uint32_t min_size, uint32_t avg_size,
                    uint32_t max_size, int normalization)
{
    unsigned bits;

    if (min_size < 64 || avg_size < 256 || max_size < 1024 || min_size > avg_size ||
        avg_size > max_size || max_size > (16u << 20) || normalization < 0 || normalization > 3)
        return -1;
    bits = log2_round(avg_size);
    if (bits < 5 + (unsigned)normalization || bits + (unsigned)normalization > 25)
        return -1;
    p->min_size = min_size;
    p->avg_size = avg_size;
    p->max_size = max_size;
    p->mask_s = MASKS[bits + (unsigned)normalization];
    p->mask_l = MASKS[bits - (unsigned)normalization];
    p->mask_s_ls = p->mask_s << 1;
    p->mask_l_ls = p->mask_l << 1;
    return 0;
}

size_t wormfs_cdc_cut(const wormfs_cdc_params *p, const uint8_t *restrict buf, size_t len)
{
    size_t remaining = len, center = p->avg_size, pos, mid, end;
    uint64_t hash = 0;
    const uint64_t ms = p->mask_s, ml = p->mask_l, ms_ls = p->mask_s_ls, ml_ls = p->mask_l_ls;
    const uint64_t *restrict gear = WORMFS_GEAR, *restrict gear_ls = WORMFS_GEAR_LS;

    if (remaining <= p->min_size)
        return remaining;
    if (remaining > p->max_size)
        remaining = p->max_size;
    else if (remaining < center)
        center = remaining;

    /* Positions are walked two bytes at a time from min_size (rounded down to even); no cut is
     * ever looked for in the first min_size bytes, which is where FastCDC saves most work. */
    pos = (p->min_size / 2) * 2;
    mid = (center / 2) * 2;
    end = (remaining / 2) * 2;

    for (; pos < mid; pos += 2) {
        hash = (hash << 2) + gear_ls[buf[pos]];
        if (!(hash & ms_ls))
            return pos;
        hash += gear[buf[pos + 1]];
        if (!(hash & ms))
            return pos + 1;
    }
    for (; pos < end; pos += 2) {
        hash = (hash << 2) + gear_ls[buf[pos]];
        if (!(hash & ml_ls))
            return pos;
        hash += gear[buf[pos + 1]];
        if (!(hash & ml))
            return pos + 1;
    }
    /* No content-defined cut: pathological data (e.g. all zeroes) gets max-size chunks. */
    return remaining;
}
